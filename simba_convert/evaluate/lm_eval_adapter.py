"""The `simba` model type for lm-evaluation-harness (LAMBADA, HellaSwag, PIQA, ARC, WinoGrande, ...).

Importing this module registers the type. lm-eval's own `lm_eval` command cannot import it (README.md,
"lm-evaluation-harness": lm-eval 0.4.13 looks models up in a fixed table of its own modules and reads no plugin
entry points), so `simba-convert lm-eval ARGS` runs lm-eval's command line with the type registered:

    simba-convert lm-eval --model simba --model_args pretrained=OUT_DIR,dtype=bfloat16 --device cuda --tasks hellaswag

From Python, import this module and call lm-eval:

    import lm_eval, simba_convert.evaluate.lm_eval_adapter  # noqa: F401  (registers "simba")
    lm_eval.simple_evaluate(model="simba", model_args="pretrained=OUT_DIR,dtype=bfloat16", device="cuda",
                            tasks=["hellaswag", "piqa"], batch_size=16)

or pass an instance: `simple_evaluate(model=SimbaLM(model=m, tokenizer=tok), tasks=[...])`.
Log-likelihoods use the same code path as `simba-convert eval --tasks` (multiple_choice.py): a pruned
model is called with protect = the continuation length, in unpadded batches of equal shape.
Rolling log-likelihoods (perplexity tasks) score disjoint spans of max_length tokens, each protected
in full (`rolling_requests`). Generation (`generate_until`) is the model's own `generate`, greedy unless the
task asks for sampling, stopped at the first of the task's stop strings or the end-of-text token.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, MissingExtraError, SimbaError
from ._common import encoder, end_of_text_id, resolve_device
from .multiple_choice import encode_pair, make_request, rolling_requests, score_requests

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:
    raise MissingExtraError("the lm-eval adapter needs lm-evaluation-harness: "
                            "pip install 'simba-convert[lm-eval]'") from e

# generation settings that change nothing when they have these values (tasks often spell them out)
_NEUTRAL_GENERATION = {"num_beams": 1, "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": False}
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default


def _batch_size(value) -> int:
    """An integer, or lm-eval's "auto" / "auto:N" (no memory probing here: 8)."""
    s = str(value).strip()
    if s.startswith("auto"):
        return 8
    if not s.isdigit() or int(s) < 1:
        raise ConfigError(f"batch_size must be a positive integer or auto, got {value!r}", option="batch_size")
    return int(s)


@register_model("simba")
class SimbaLM(LM):
    """An lm-eval LM over a dense MambaLM or a pruned Simba model (anything `evaluate` accepts).

    model_args (lm-eval's `--model_args`): pretrained (a converted directory, a dense checkpoint, a hub id or a
    short name), dtype (auto, float32, bfloat16, float16), tokenizer (a file or directory, when the checkpoint has
    none), max_length (prompt limit in tokens, default 2048), offline. The device is lm-eval's `--device`.
    """

    def __init__(self, pretrained: str | None = None, *, model=None, tokenizer=None, device: str | None = "auto",
                 dtype: str = "auto", batch_size: int | str = 8, max_length: int = 2048, offline: bool = False,
                 max_batch_size=None, trust_remote_code: bool = False, **unknown):
        super().__init__()
        # max_batch_size only bounds lm-eval's own "auto" batch search; trust_remote_code is never needed (no
        # remote code runs here)
        del max_batch_size, trust_remote_code
        if unknown:
            raise ConfigError(f"unknown model_args for simba: {', '.join(sorted(unknown))} (known: pretrained, "
                              "dtype, tokenizer, max_length, offline)", option="model_args")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2, got {max_length!r}", option="max_length")
        self.batch_size, self.max_length = _batch_size(batch_size), max_length  # checked before the model loads
        if model is None:
            if pretrained is None:
                raise ConfigError("give pretrained=SRC (lm-eval's --model_args) or a model object",
                                  option=("pretrained", "model"))
            from ..io.load import load_with_tokenizer

            tok_path = str(tokenizer) if tokenizer is not None else None
            try:
                model, tokenizer, _ = load_with_tokenizer(str(pretrained), device=device or "auto", dtype=dtype,
                                                          tokenizer=tok_path, offline=bool(offline))
            except SimbaError as e:
                if "device" in e.options:  # lm-eval's --device defaults to cuda:0, a choice the user never made
                    raise type(e)(f"{e}; the device is lm-eval's --device, default cuda:0", option=e.options) from None
                raise
        elif tokenizer is None:
            raise ConfigError("a model object needs its tokenizer", option="tokenizer")
        self.model, self.tokenizer = model, tokenizer
        self._encode, self._eot = encoder(tokenizer), end_of_text_id(tokenizer)
        self._device = resolve_device(model, None)  # lm-eval reads it through its `device` property

    def _progress(self, disable_tqdm: bool):
        return False if disable_tqdm else None

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether every continuation token is the argmax) per request."""
        # lm-eval's continuation carries its delimiter already (" Paris"), hence delimiter="".
        reqs = [make_request(*encode_pair(self._encode, ctx, cont, self._eot, delimiter=""), self.max_length)
                for ctx, cont in (r.args for r in requests)]
        out = score_requests(self.model, reqs, batch_size=self.batch_size, device=self._device,
                             progress=self._progress(disable_tqdm), with_greedy=True)
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log p(text), every token scored once, conditioned on the end-of-text token."""
        if self._eot is None:
            raise ConfigError("rolling log-likelihoods (perplexity tasks) need an end-of-text token, and the "
                              "tokenizer has none", option="tokenizer")
        spans, windows = [], []
        for (text,) in (r.args for r in requests):
            w = rolling_requests(self._encode(text), self._eot, self.max_length)
            spans.append((len(windows), len(windows) + len(w)))
            windows += w
        lls = score_requests(self.model, windows, batch_size=self.batch_size, device=self._device,
                             progress=self._progress(disable_tqdm), desc="rolling")
        out = [sum(lls[a:b]) for a, b in spans]
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, res)
        return out

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """The continuation of each context by the model's `generate`, cut before the first stop string."""
        if not hasattr(self.model, "generate"):
            raise ConfigError(f"{type(self.model).__name__} has no generate(); generation tasks need a MambaLM or a "
                              "pruned model", option="model")
        out = []
        for r in requests:
            context, kw = r.args
            text = self._generate(context, dict(kw or {}))
            self.cache_hook.add_partial("generate_until", r.args, text)
            out.append(text)
        return out

    def _generate(self, context: str, kw: dict) -> str:
        until = kw.pop("until", None) or []
        until = [s for s in ([until] if isinstance(until, str) else list(until)) if s]
        max_new = int(kw.pop("max_gen_toks", kw.pop("max_new_tokens", DEFAULT_MAX_GEN_TOKS)))
        temperature = float(kw.pop("temperature", 1.0))
        sample = bool(kw.pop("do_sample", False)) and temperature > 0
        sampling = {"top_k": int(kw.pop("top_k", 0) or 0), "top_p": float(kw.pop("top_p", 1.0) or 1.0)}
        refused = sorted(k for k, v in kw.items() if _NEUTRAL_GENERATION.get(k, object()) != v)
        if refused:
            raise ConfigError(f"generation settings not supported by the simba model: {', '.join(refused)} (greedy "
                              "or sampled decoding with temperature, top_k, top_p, until, max_gen_toks)",
                              option="gen_kwargs")
        ids = self._encode(context) or ([self._eot] if self._eot is not None else [])
        if not ids:
            raise ConfigError("an empty prompt needs an end-of-text token, and the tokenizer has none")
        ids = ids[-max(1, self.max_length - max_new):]
        decode = self.tokenizer.decode

        def stop(new: torch.Tensor) -> bool:  # new [1, n]: the tokens generated so far
            return bool(until) and any(s in decode(new[0].tolist()) for s in until)

        x = torch.tensor([ids], device=self._device)
        y = self.model.generate(x, max_new, do_sample=sample, temperature=temperature if sample else 1.0,
                                eos_token_id=self._eot, stop=stop, **(sampling if sample else {}))
        new = y[0, len(ids):].tolist()
        if self._eot is not None and self._eot in new:
            new = new[: new.index(self._eot)]
        text = decode(new)
        cut = min((text.find(s) for s in until if s in text), default=len(text))
        return text[:cut]
