"""The transformers config of a Simba (token-pruned Mamba) checkpoint, written beside its weights by simba-convert.

config.json says model_type "simba" so that transformers cannot mistake the checkpoint for the dense Mamba it was
made from: its "simba" section (the per-layer keep ratios and the scoring criterion) is what makes it run pruned,
and transformers' own Mamba classes would ignore it. Every entry of config.json is kept as an attribute as it is;
`simba_base_config` holds the dense model's model_type and architectures, which simba-convert reads the
architecture from. This file is generated from a template of simba-convert (simba_convert/io/hf_remote/).
"""

try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers < 5
    from transformers import PretrainedConfig as PreTrainedConfig


class SimbaConfig(PreTrainedConfig):
    model_type = "simba"
