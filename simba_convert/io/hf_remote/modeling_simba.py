"""transformers' entry to a Simba (token-pruned Mamba) checkpoint, written beside its weights by simba-convert.

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

builds the model with `simba_convert.load(path)`, so it runs pruned exactly as simba-convert runs it: the same
logits, the same pruned prefill and dense recurrent decoding in `generate`. It needs simba-convert installed
(`pip install simba-convert`). Nothing here reimplements the model; this file only adapts transformers' calling
conventions (CausalLMOutput, the LM loss, GenerationConfig) and refuses loudly what it does not support.
This file is generated from a template of simba-convert (simba_convert/io/hf_remote/).
"""

import os

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_simba import SimbaConfig

try:  # in a try block: transformers' own import check would name the module, not the package to install
    import simba_convert
except ImportError:
    raise ImportError("this is a Simba (token-pruned Mamba) checkpoint, which runs only through simba-convert: "
                      "pip install simba-convert") from None

# from_pretrained options that do not apply here (transformers passes some itself); any other set option is refused
_IGNORED_LOAD_OPTIONS = ("trust_remote_code", "code_revision", "adapter_kwargs", "_from_auto", "_from_pipeline",
                         "_commit_hash", "use_safetensors", "low_cpu_mem_usage", "attn_implementation", "proxies",
                         "force_download", "key_mapping")
# generation options that change the result, with the value that does not (None: unset)
_NEUTRAL_GENERATION = {
    "num_beams": 1, "num_return_sequences": 1, "num_beam_groups": 1, "penalty_alpha": None, "dola_layers": None,
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0,
    "min_new_tokens": 0, "bad_words_ids": None, "force_words_ids": None, "constraints": None, "sequence_bias": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "typical_p": 1.0, "min_p": None, "top_h": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "exponential_decay_length_penalty": None, "guidance_scale": None, "watermarking_config": None,
    "stop_strings": None, "max_time": None, "renormalize_logits": False, "token_healing": False,
    "prompt_lookup_num_tokens": None, "return_dict_in_generate": False, "output_scores": False,
    "output_logits": False, "output_attentions": False, "output_hidden_states": False,
}
_GENERATE_ARGS = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p", "eos_token_id",
                  "pad_token_id")


class SimbaForCausalLM(PreTrainedModel, GenerationMixin):
    """A Simba checkpoint run pruned by simba-convert (`self.simba`: its PrunedMambaLM). Built only from a checkpoint
    directory or Hub repository: `from_pretrained`."""

    config_class = SimbaConfig
    base_model_prefix = "simba"
    main_input_name = "input_ids"
    _no_split_modules = []

    def __init__(self, config, simba_model=None):
        if simba_model is None:
            raise ValueError("SimbaForCausalLM runs a sparsified checkpoint: build it with "
                             "AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)")
        super().__init__(config)
        self.post_init()  # before the model is attached: transformers' weight initialisation must not touch it
        self.simba = simba_model

    # --- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, dtype=None, torch_dtype=None,
                        device_map=None, cache_dir=None, local_files_only=False, revision=None, token=None,
                        subfolder="", output_loading_info=False, **kwargs):
        """dtype (or torch_dtype): None (float32), "auto" (as stored) or a torch dtype; device_map: None (cpu),
        "auto", a device, or a dict sending every module to one device."""
        unsupported = {k: v for k, v in kwargs.items() if k not in _IGNORED_LOAD_OPTIONS and v not in (None, False)}
        if model_args or unsupported or output_loading_info:
            what = ", ".join([*unsupported, *(["positional model arguments"] if model_args else []),
                              *(["output_loading_info"] if output_loading_info else [])])
            raise ValueError(f"SimbaForCausalLM.from_pretrained does not support {what}")
        path = str(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            path = snapshot_download(path, revision=revision, cache_dir=cache_dir, token=token,
                                     local_files_only=local_files_only)
        path = os.path.join(path, subfolder) if subfolder else path
        model = simba_convert.load(path, dtype=_dtype(torch_dtype if dtype is None else dtype),
                                   device=_device(device_map))
        if not getattr(model, "is_pruned", False):
            raise ValueError(f"{path} is not a sparsified (Simba) checkpoint: load it with its own model class")
        if config is None:
            config = SimbaConfig.from_pretrained(path)
        out = cls(config, simba_model=model.eval())
        if os.path.isfile(os.path.join(path, "generation_config.json")):
            out.generation_config = GenerationConfig.from_pretrained(path)
        return out.eval()

    def save_pretrained(self, *args, **kwargs):
        raise NotImplementedError("a Simba checkpoint is written by simba-convert: copy its directory, or save the "
                                  "model with simba_convert.save_checkpoint (see simba-convert's README)")

    def get_input_embeddings(self):
        return self.simba.dense.backbone.embedding

    def get_output_embeddings(self):
        return self.simba.dense.lm_head

    # --- running ---------------------------------------------------------------------------------------------
    def forward(self, input_ids=None, attention_mask=None, labels=None, inputs_embeds=None, return_dict=None,
                num_items_in_batch=None, use_cache=None, **kwargs):
        """Logits [B, L, V] of the pruned model (padding: attention_mask with 0s; its positions get zero logits) and,
        with labels, the mean next-token cross-entropy over labels != -100 (or its sum / num_items_in_batch)."""
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("SimbaForCausalLM takes input_ids (token pruning needs the tokens, not embeddings)")
        unsupported = [k for k, v in kwargs.items() if v not in (None, False)]
        if unsupported:
            raise ValueError(f"SimbaForCausalLM.forward does not support {', '.join(unsupported)}")
        mask = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            mask = attention_mask
        logits = self.simba(input_ids, mask)
        loss = None
        if labels is not None:
            flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            target = labels[:, 1:].to(logits.device).reshape(-1)
            if num_items_in_batch is None:
                loss = F.cross_entropy(flat, target, ignore_index=-100)
            else:
                loss = F.cross_entropy(flat, target, ignore_index=-100, reduction="sum") / num_items_in_batch
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return CausalLMOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        """Greedy or sampled decoding (do_sample, temperature, top_k, top_p) through simba-convert's generate: the
        prompt runs pruned, each new token densely. input_ids [B, L] -> [B, L + new]; after a sample's eos its tokens
        are pad_token_id (default: the eos). Padded batches, beam search and the other strategies are refused."""
        if input_ids is None:
            raise ValueError("SimbaForCausalLM.generate needs input_ids")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("SimbaForCausalLM.generate does not support padded batches; generate each prompt alone")
        gen = (generation_config or self.generation_config or GenerationConfig()).to_dict()
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k in gen or k in _GENERATE_ARGS}
        gen.update({k: v for k, v in extra.items() if v is not None})
        refused = [k for k, v in kwargs.items() if v is not None]
        refused += [k for k, neutral in _NEUTRAL_GENERATION.items() if gen.get(k) not in (None, neutral)]
        if refused:
            raise ValueError(f"SimbaForCausalLM.generate does not support {', '.join(refused)} (greedy or sampled "
                             "decoding with temperature, top_k and top_p only)")
        eos = gen.get("eos_token_id")
        if isinstance(eos, (list, tuple)):
            if len(eos) > 1:
                raise ValueError(f"SimbaForCausalLM.generate takes one eos_token_id, got {list(eos)}")
            eos = eos[0] if eos else None
        new = gen.get("max_new_tokens")
        if new is None:
            new = (gen.get("max_length") or 20) - input_ids.shape[1]
            if new <= 0:
                raise ValueError(f"max_length {gen.get('max_length') or 20} leaves no room after a prompt of "
                                 f"{input_ids.shape[1]} tokens; set max_new_tokens")
        sample = bool(gen.get("do_sample"))
        out = self.simba.generate(
            input_ids, int(new), do_sample=sample, eos_token_id=eos,
            temperature=1.0 if gen.get("temperature") is None else float(gen["temperature"]),
            top_k=int(50 if gen.get("top_k") is None else gen["top_k"]) if sample else 0,  # transformers' default
            top_p=1.0 if gen.get("top_p") is None else float(gen["top_p"]))
        pad = gen.get("pad_token_id")
        if eos is not None and pad is not None and pad != eos:  # simba-convert repeats the eos after it
            tail = out[:, input_ids.shape[1]:]
            after = torch.cumsum((tail == eos).int(), dim=1) - (tail == eos).int() > 0
            out[:, input_ids.shape[1]:] = tail.masked_fill(after, pad)
        return out


def _dtype(dtype):
    if isinstance(dtype, str) and dtype.startswith("torch."):
        return dtype.removeprefix("torch.")
    return dtype


def _device(device_map):
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        if len(devices) != 1:
            raise ValueError("SimbaForCausalLM runs on one device; a device_map that splits the model is not supported")
        (device_map,) = devices
    if isinstance(device_map, int):
        return f"cuda:{device_map}"
    return None if device_map is None else str(device_map)
