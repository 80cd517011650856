"""The `simba` model type for lm-evaluation-harness (LAMBADA, HellaSwag, PIQA, ARC, WinoGrande, ...).

Importing this module registers the type; lm-eval's own command line does not import it, so drive
lm-eval from Python:

    import lm_eval, simba_convert.evaluate.lm_eval_adapter  # noqa: F401  (registers "simba")
    lm_eval.simple_evaluate(model="simba", model_args="pretrained=OUT_DIR,dtype=bfloat16,device=cuda",
                            tasks=["hellaswag", "piqa"], batch_size=16)

or pass an instance: `simple_evaluate(model=SimbaLM(model=m, tokenizer=tok), tasks=[...])`.
Log-likelihoods use the same code path as `simba-convert eval --tasks` (multiple_choice.py): a pruned
model is called with protect = the continuation length, in unpadded batches of equal shape.
Rolling log-likelihoods (perplexity tasks) score disjoint spans of max_length tokens, each protected
in full, so a pruned model is evaluated without pruning there. Generation is greedy unless the task
asks for sampling.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, MissingExtraError
from ._common import encoder, end_of_text_id, resolve_device
from .multiple_choice import encode_pair, make_request, rolling_requests, score_requests

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:
    raise MissingExtraError("the lm-eval adapter needs lm-evaluation-harness: pip install lm-eval") from e


@register_model("simba")
class SimbaLM(LM):
    """An lm-eval LM over a dense MambaLM or a pruned Simba model (anything `evaluate` accepts)."""

    def __init__(self, pretrained: str | None = None, *, model=None, tokenizer=None, device: str = "auto",
                 dtype: str = "auto", batch_size: int | str = 8, max_length: int = 2048, **_ignored):
        super().__init__()
        if model is None:
            if pretrained is None:
                raise ConfigError("give pretrained=SRC or a model object", option=("pretrained", "model"))
            from ..io.load import load_with_tokenizer

            tok_path = tokenizer if isinstance(tokenizer, str) else None
            model, tokenizer, _ = load_with_tokenizer(pretrained, device=device, dtype=dtype, tokenizer=tok_path)
        self.model, self.tokenizer = model, tokenizer
        self._encode, self._eot = encoder(tokenizer), end_of_text_id(tokenizer)
        self._device = resolve_device(model, None)  # lm-eval reads it through its `device` property
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8  # "auto" -> a fixed default
        self.max_length = int(max_length)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        reqs = [make_request(*encode_pair(self._encode, ctx, cont, self._eot, delimiter=""), self.max_length)
                for ctx, cont in (r.args for r in requests)]
        return score_requests(self.model, reqs, batch_size=self.batch_size, device=self._device,
                              progress=False if disable_tqdm else None, with_greedy=True)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        spans, windows = [], []
        for (text,) in (r.args for r in requests):
            w = rolling_requests(self._encode(text), self._eot, self.max_length)
            spans.append((len(windows), len(windows) + len(w)))
            windows += w
        lls = score_requests(self.model, windows, batch_size=self.batch_size, device=self._device,
                             progress=False if disable_tqdm else None, desc="rolling")
        return [sum(lls[a:b]) for a, b in spans]

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, kw in (r.args for r in requests):
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kw.get("max_gen_toks", 256))
            ids = self._encode(context) or [self._eot]
            ids = ids[-max(1, self.max_length - max_new):]
            x = torch.tensor([ids], device=self._device)
            sample = bool(kw.get("do_sample", False)) and float(kw.get("temperature", 1.0)) > 0
            y = self.model.generate(x, max_new, do_sample=sample, temperature=float(kw.get("temperature", 1.0)),
                                    eos_token_id=self._eot)
            text = self.tokenizer.decode(y[0, len(ids):].tolist())
            cut = min((text.find(s) for s in until if s and s in text), default=len(text))
            out.append(text[:cut])
        return out
