"""Weights between minigpt's `GPT` and other programs: nanoGPT's parameter names, and the
Hugging Face `transformers` architectures that compute exactly the same function.

| minigpt options (pre-norm)                 | transformers class                        |
| ------------------------------------------ | ----------------------------------------- |
| learned positions, LayerNorm, GELU or ReLU | `GPT2LMHeadModel`                         |
| rotary, LayerNorm, GELU or ReLU            | `GPTNeoXForCausalLM` (sequential residual) |
| rotary, RMSNorm, SwiGLU                    | `LlamaForCausalLM`                        |

Sinusoidal positions and post-norm blocks have no counterpart and are refused. Where a
transformers model has biases that minigpt's `bias=false` lacks (GPT-2's, GPT-NeoX's), they
are exported as zeros, which computes the same function. `transformers` is imported only
here, inside the functions that need it: the model file stays free of it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from minigpt.core.model import BEYOND_STANDARD, GPT, GPTConfig
from minigpt.core.tokenizers import (
    END_OF_TEXT,
    CharTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    gpt2_byte_alphabet,
    tokenizer_from_dict,
)

NORM_EPS = 1e-5  # minigpt's LayerNorm and RMSNorm
# minigpt's activation -> transformers' name for it; GPT-2's own is gelu_new (tanh GELU)
HF_ACTIVATION = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new"}
FROM_HF_ACTIVATION = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"}
FROM_HF_ACTIVATION["gelu_pytorch_tanh"] = "gelu_tanh"  # the same function, torch's kernel
# GPT-2's released models on the Hugging Face hub (init_from=gpt2 downloads on a machine
# with a network; any local directory works everywhere)
GPT2_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
SUPPORTED = (
    "learned positions + layernorm + gelu/gelu_tanh/relu (GPT-2); rope + layernorm + gelu/relu "
    "(GPT-NeoX); rope + rmsnorm + swiglu (Llama); all with pre-norm blocks"
)

# ---------------------------------------------------------------------------- nanoGPT

# minigpt's prefix -> nanoGPT's (karpathy/nanoGPT model.py, same layout and layer names)
NANOGPT_PREFIXES = {
    "wte.": "transformer.wte.",
    "positions.wpe.": "transformer.wpe.",
    "blocks.": "transformer.h.",
    "ln_f.": "transformer.ln_f.",
    "lm_head.": "lm_head.",
}


def to_nanogpt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A minigpt state dict (learned positions, LayerNorm, GELU) under nanoGPT's names."""
    return {_rename(key, NANOGPT_PREFIXES): value for key, value in state.items()}


def from_nanogpt(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nanoGPT's state dict (`_orig_mod.` of torch.compile dropped) under minigpt's names."""
    back = {new: old for old, new in NANOGPT_PREFIXES.items()}
    return {_rename(key.removeprefix("_orig_mod."), back): value for key, value in state.items()}


def _rename(key: str, prefixes: dict[str, str]) -> str:
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(f"parameter {key} has no counterpart")


# ---------------------------------------------------------------------------- architectures


def hf_architecture(config: GPTConfig) -> str:
    """The transformers model type that computes what config describes, or a ValueError
    naming the supported sets."""
    c = config
    if any(getattr(c, name) for name in BEYOND_STANDARD):
        raise ValueError(
            "no transformers architecture computes "
            + ", ".join(f"{name}={getattr(c, name)}" for name in BEYOND_STANDARD)
            + ": export a model trained without them"
        )
    if c.norm_placement == "pre" and c.norm == "layernorm" and c.activation in HF_ACTIVATION:
        if c.pos_encoding == "learned":
            return "gpt2"
        if c.pos_encoding == "rope":
            return "gpt_neox"
    if (c.norm_placement, c.pos_encoding, c.norm, c.activation) == (
        "pre",
        "rope",
        "rmsnorm",
        "swiglu",
    ):
        return "llama"
    raise ValueError(
        f"no transformers architecture computes pos_encoding={c.pos_encoding}, norm={c.norm}, "
        f"activation={c.activation}, norm_placement={c.norm_placement}; supported: {SUPPORTED}"
    )


def swiglu_hidden(config: GPTConfig) -> int:
    return int(2 * config.mlp_ratio * config.n_embd / 3)


def hf_config(config: GPTConfig, eos_token_id: int | None = None):
    """The transformers config of the architecture for config."""
    import transformers

    c, kind = config, hf_architecture(config)
    common = {
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": c.tie_weights,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
    }
    if kind == "gpt2":
        return transformers.GPT2Config(
            n_positions=c.block_size,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_inner=c.mlp_ratio * c.n_embd,
            activation_function=HF_ACTIVATION[c.activation],
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=NORM_EPS,
            **common,
        )
    rope = {"rope_type": "default", "rope_theta": c.rope_base}
    if kind == "gpt_neox":
        return transformers.GPTNeoXConfig(
            hidden_size=c.n_embd,
            num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head,
            intermediate_size=c.mlp_ratio * c.n_embd,
            hidden_act=HF_ACTIVATION[c.activation],
            max_position_embeddings=c.block_size,
            layer_norm_eps=NORM_EPS,
            use_parallel_residual=False,
            rope_parameters=rope | {"partial_rotary_factor": 1.0},
            attention_bias=True,
            **common,
        )
    return transformers.LlamaConfig(
        hidden_size=c.n_embd,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.n_head,
        head_dim=c.head_size,
        intermediate_size=swiglu_hidden(c),
        hidden_act="silu",
        max_position_embeddings=c.block_size,
        rms_norm_eps=NORM_EPS,
        rope_parameters=rope,
        attention_bias=c.bias,
        mlp_bias=c.bias,
        **common,
    )


def config_from_hf(hf, vocab_multiple: int = 1) -> GPTConfig:
    """The GPTConfig that computes what a transformers config describes (GPT-2, GPT-NeoX,
    Llama), or a ValueError naming the setting minigpt has no counterpart for."""
    return dataclasses.replace(config_for_hf(hf), vocab_multiple=vocab_multiple)


def config_for_hf(hf) -> GPTConfig:
    kind = hf.model_type

    def need(ok: bool, setting: str) -> None:
        if not ok:
            raise ValueError(f"this {kind} model has {setting}, which minigpt does not compute")

    def ratio(hidden: int, width: int) -> int:
        need(hidden % width == 0, f"an MLP width of {hidden} (not a multiple of {width})")
        return hidden // width

    if kind == "gpt2":
        width = hf.n_embd
        act = hf.activation_function
        need(act in FROM_HF_ACTIVATION, f"activation {act}")
        need(hf.layer_norm_epsilon == NORM_EPS, f"layer_norm_epsilon={hf.layer_norm_epsilon}")
        need(not hf.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx")
        need(hf.scale_attn_weights, "unscaled attention")
        return GPTConfig(
            vocab_size=hf.vocab_size,
            block_size=hf.n_positions,
            n_layer=hf.n_layer,
            n_head=hf.n_head,
            n_embd=width,
            mlp_ratio=ratio(hf.n_inner or 4 * width, width),
            pos_encoding="learned",
            activation=FROM_HF_ACTIVATION[act],
            tie_weights=hf.tie_word_embeddings,
        )
    rope = hf.rope_parameters or {}
    need(rope.get("rope_type", "default") == "default", f"rope_type {rope.get('rope_type')}")
    if kind == "gpt_neox":
        need(not hf.use_parallel_residual, "parallel residuals")
        factor = rope.get("partial_rotary_factor", 1.0)
        need(factor == 1.0, f"partial rotary (partial_rotary_factor={factor})")
        need(hf.layer_norm_eps == NORM_EPS, f"layer_norm_eps={hf.layer_norm_eps}")
        need(hf.hidden_act in FROM_HF_ACTIVATION, f"activation {hf.hidden_act}")
        return GPTConfig(
            vocab_size=hf.vocab_size,
            block_size=hf.max_position_embeddings,
            n_layer=hf.num_hidden_layers,
            n_head=hf.num_attention_heads,
            n_embd=hf.hidden_size,
            mlp_ratio=ratio(hf.intermediate_size, hf.hidden_size),
            pos_encoding="rope",
            rope_base=float(rope["rope_theta"]),
            activation=FROM_HF_ACTIVATION[hf.hidden_act],
            tie_weights=hf.tie_word_embeddings,
        )
    if kind == "llama":
        need(hf.hidden_act == "silu", f"activation {hf.hidden_act}")
        need(hf.rms_norm_eps == NORM_EPS, f"rms_norm_eps={hf.rms_norm_eps}")
        heads, width = hf.num_attention_heads, hf.hidden_size
        need(hf.num_key_value_heads in (None, heads), "grouped-query attention")
        need(hf.head_dim in (None, width // heads), f"head_dim={hf.head_dim}")
        ratios = [r for r in range(1, 65) if int(2 * r * width / 3) == hf.intermediate_size]
        need(bool(ratios), f"intermediate_size={hf.intermediate_size} (not 2/3 of k × {width})")
        return GPTConfig(
            vocab_size=hf.vocab_size,
            block_size=hf.max_position_embeddings,
            n_layer=hf.num_hidden_layers,
            n_head=heads,
            n_embd=width,
            mlp_ratio=ratios[0],
            bias=bool(hf.attention_bias or hf.mlp_bias),
            pos_encoding="rope",
            rope_base=float(rope["rope_theta"]),
            norm="rmsnorm",
            activation="swiglu",
            tie_weights=hf.tie_word_embeddings,
        )
    raise ValueError(
        f"model_type={kind!r}: minigpt reads gpt2, gpt_neox and llama models ({SUPPORTED})"
    )


# ---------------------------------------------------------------------------- weights


def _pairs(config: GPTConfig, kind: str) -> list[tuple[str, str]]:
    """(minigpt's module name, transformers') for parameters that map one to one (their
    .weight and .bias); Llama's fused ones (c_attn -> q, k, v; c_fc -> gate, up) aside."""
    outer = {
        "gpt2": [
            ("wte", "transformer.wte"),
            ("positions.wpe", "transformer.wpe"),
            ("ln_f", "transformer.ln_f"),
        ],
        "gpt_neox": [("wte", "gpt_neox.embed_in"), ("ln_f", "gpt_neox.final_layer_norm")],
        "llama": [("wte", "model.embed_tokens"), ("ln_f", "model.norm")],
    }[kind]
    inner = {
        "gpt2": ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"],
        "gpt_neox": [
            "input_layernorm",
            "attention.query_key_value",
            "attention.dense",
            "post_attention_layernorm",
            "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h",
        ],
        "llama": [
            "input_layernorm",
            None,
            "self_attn.o_proj",
            "post_attention_layernorm",
            None,
            "mlp.down_proj",
        ],
    }[kind]
    ours = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
    layer = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "llama": "model.layers"}[kind]
    for i in range(config.n_layer):
        outer += [
            (f"blocks.{i}.{mine}", f"{layer}.{i}.{theirs}")
            for mine, theirs in zip(ours, inner, strict=True)
            if theirs is not None
        ]
    return outer


def _to_hf(kind: str, name: str, value: torch.Tensor, config: GPTConfig) -> torch.Tensor:
    if kind == "gpt2" and value.dim() == 2 and ".c_" in name:  # Conv1D: (in, out)
        return value.t().contiguous()
    if kind == "gpt_neox" and name.endswith("attn.c_attn"):  # [q; k; v] -> per head [q; k; v]
        return (
            value.view(3, config.n_head, config.head_size, -1).transpose(0, 1).reshape(value.shape)
        )
    return value


def _from_hf(kind: str, name: str, value: torch.Tensor, config: GPTConfig) -> torch.Tensor:
    if kind == "gpt2" and value.dim() == 2 and ".c_" in name:
        return value.t().contiguous()
    if kind == "gpt_neox" and name.endswith("attn.c_attn"):
        return (
            value.view(config.n_head, 3, config.head_size, -1).transpose(0, 1).reshape(value.shape)
        )
    return value


LLAMA_FUSED = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.c_fc": ("mlp.gate_proj", "mlp.up_proj"),
}


def to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """model's parameters under the names and layouts of its transformers architecture.
    GPT-2 and GPT-NeoX always have biases: minigpt's bias=false exports them as zeros."""
    config, kind = model.config, hf_architecture(model.config)
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for mine, theirs in _pairs(config, kind):
        weight = ours[mine + ".weight"]
        out[theirs + ".weight"] = _to_hf(kind, mine, weight, config)
        bias = ours.get(mine + ".bias")
        if bias is None and kind != "llama" and not mine.startswith(("wte", "positions")):
            bias = weight.new_zeros(weight.shape[0])
        if bias is not None:
            out[theirs + ".bias"] = _to_hf(kind, mine, bias, config)
    if kind == "llama":
        for i in range(config.n_layer):
            for mine, parts in LLAMA_FUSED.items():
                for suffix in (".weight", ".bias"):
                    if f"blocks.{i}.{mine}{suffix}" in ours:
                        pieces = ours[f"blocks.{i}.{mine}{suffix}"].chunk(len(parts), dim=0)
                        for part, piece in zip(parts, pieces, strict=True):
                            out[f"model.layers.{i}.{part}{suffix}"] = piece.contiguous()
    out["lm_head.weight"] = ours["lm_head.weight"]
    # padding rows (vocab_multiple) are no tokens: the transformers model has vocab_size
    for name in ("transformer.wte.weight", "gpt_neox.embed_in.weight", "model.embed_tokens.weight"):
        if name in out:
            out[name] = out[name][: config.vocab_size]
    out["lm_head.weight"] = out["lm_head.weight"][: config.vocab_size]
    return out


def from_hf_state(hf_state: dict[str, torch.Tensor], model: GPT) -> dict[str, torch.Tensor]:
    """A transformers state dict of model's architecture under minigpt's names, for
    model.load_state_dict. A bias model has and the transformers model lacks is zero; with
    tied weights the head is the embedding."""
    config, kind = model.config, hf_architecture(model.config)
    template = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for mine, theirs in _pairs(config, kind):
        for suffix in (".weight", ".bias"):
            if mine + suffix in template:
                value = hf_state.get(theirs + suffix)
                state[mine + suffix] = (
                    torch.zeros_like(template[mine + suffix])
                    if value is None
                    else _from_hf(kind, mine, value, config)
                )
    if kind == "llama":
        for i in range(config.n_layer):
            for mine, parts in LLAMA_FUSED.items():
                for suffix in (".weight", ".bias"):
                    if f"blocks.{i}.{mine}{suffix}" in template:
                        pieces = [
                            hf_state.get(f"model.layers.{i}.{part}{suffix}") for part in parts
                        ]
                        state[f"blocks.{i}.{mine}{suffix}"] = (
                            torch.cat(pieces)
                            if all(p is not None for p in pieces)
                            else torch.zeros_like(template[f"blocks.{i}.{mine}{suffix}"])
                        )
    head = state["wte.weight"] if config.tie_weights else hf_state["lm_head.weight"]
    state["lm_head.weight"] = head
    for name in ("wte.weight", "lm_head.weight"):  # zero rows up to padded_vocab_size
        rows = config.padded_vocab_size - state[name].shape[0]
        state[name] = torch.cat([state[name], state[name].new_zeros(rows, config.n_embd)])
    if config.tie_weights:
        state["lm_head.weight"] = state["wte.weight"]
    return state


# ---------------------------------------------------------------------------- directories


def hf_tokenizer(tokenizer: Tokenizer):
    """A transformers fast tokenizer that encodes as tokenizer does. Byte-level BPE maps
    onto HF `tokenizers`' BPE (GPT-2's byte-to-character table, the same merges and
    pre-tokenization regex); characters onto a word-level vocabulary of single characters,
    each character its own word, joined back without spaces."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, CharTokenizer):
        vocab = {c: i for i, c in enumerate(tokenizer.chars)}
        hf = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        # no end-of-text: a line break begins text (as sample.py's default prompt), and is
        # what harnesses (lm-evaluation-harness) put before a context as its start token
        start = "\n" if "\n" in tokenizer.stoi else None
        return PreTrainedTokenizerFast(
            tokenizer_object=hf, bos_token=start, clean_up_tokenization_spaces=False
        )
    alphabet = gpt2_byte_alphabet()
    mergeable = tokenizer.vocab_size - len(tokenizer.special_tokens)  # special tokens last
    names = ["".join(alphabet[b] for b in token) for token in tokenizer.token_bytes()[:mergeable]]
    if len(set(names)) != len(names):
        raise ValueError(
            "two merges of this BPE tokenizer make the same bytes: HF BPE cannot hold it"
        )
    merges = [(names[a], names[b]) for a, b in tokenizer.merges]
    hf = Tokenizer(models.BPE(vocab={n: i for i, n in enumerate(names)}, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(s, special=True) for s in tokenizer.special_tokens])
    eos = END_OF_TEXT if END_OF_TEXT in tokenizer.special_tokens else None
    return PreTrainedTokenizerFast(
        tokenizer_object=hf, eos_token=eos, clean_up_tokenization_spaces=False
    )


def export_hf(model: GPT, tokenizer: Tokenizer, out_dir: Path) -> str:
    """Writes into out_dir (which must not exist) what `transformers.AutoModelForCausalLM`
    and `AutoTokenizer.from_pretrained(out_dir)` load with no custom code: config.json,
    model.safetensors, the tokenizer's files, and minigpt's tokenizer (`minigpt_tokenizer.json`,
    for the way back). Returns the transformers class name."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    config = hf_config(model.config, tokenizer.eot_id)
    hf_model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = hf_model.load_state_dict(to_hf_state(model), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_weights else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"export left out {sorted(set(missing) - tied)}, added {unexpected}")
    hf_model.save_pretrained(out_dir)
    hf_tokenizer(tokenizer).save_pretrained(out_dir)
    Path(out_dir, "minigpt_tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
    return type(hf_model).__name__


def load_hf(directory: str | Path, vocab_multiple: int = 1) -> GPT:
    """minigpt's GPT with the weights of a local transformers directory (GPT-2, GPT-NeoX or
    Llama whose settings minigpt computes: `config_from_hf`). Nothing is downloaded."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} has no config.json: not a transformers model directory"
        )
    hf_config_ = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    config = config_from_hf(hf_config_, vocab_multiple)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, dtype=torch.float32
    )
    model = GPT(config)
    model.load_state_dict(from_hf_state(hf_model.state_dict(), model))
    return model.eval()


def gpt2_directory(name: str) -> Path:
    """The local directory of one of GPT-2's released models (GPT2_MODELS), downloaded from
    the Hugging Face hub into its cache on first use (found there afterwards, offline too)."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]
    try:
        return Path(snapshot_download(f"openai-community/{name}", allow_patterns=patterns))
    except Exception as err:
        raise ValueError(
            f"init_from={name}: GPT-2's weights could not be fetched from the Hugging Face hub "
            f"({type(err).__name__}); without a network, give the path of a local copy "
            "(a directory with config.json, model.safetensors, vocab.json and merges.txt)"
        ) from None


def load_pretrained(directory: str | Path, vocab_multiple: int = 1) -> tuple[GPT, dict]:
    """A transformers directory's model (or one of GPT2_MODELS by name) and its tokenizer:
    the minigpt tokenizer it was trained with (`minigpt_tokenizer.json`, which export_hf
    writes), or GPT-2's through tiktoken from the directory's vocab.json and merges.txt."""
    if str(directory) in GPT2_MODELS and not Path(directory).exists():
        directory = gpt2_directory(str(directory))
    model = load_hf(directory, vocab_multiple)
    path = Path(directory) / "minigpt_tokenizer.json"
    if path.is_file():
        tokenizer = json.loads(path.read_text())
    elif (Path(directory) / "merges.txt").is_file() and model.config.pos_encoding == "learned":
        tokenizer = TiktokenTokenizer.gpt2(directory).to_dict()
    else:
        raise ValueError(
            f"{directory} has no minigpt_tokenizer.json (nor GPT-2's vocab.json and merges.txt): "
            "init_from needs the tokenizer the model was trained with (export.py writes it)"
        )
    if (size := tokenizer_from_dict(tokenizer).vocab_size) != model.config.vocab_size:
        raise ValueError(
            f"the tokenizer of {directory} has {size:,} tokens, the model's vocabulary "
            f"{model.config.vocab_size:,}: they do not belong together"
        )
    return model, tokenizer
