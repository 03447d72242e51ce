"""Train (or evaluate) the embedded "lab model": a tiny Llama RoPE LM with a 256-token window, CPU-only, offline.

Data: the running Python's standard-library sources plus ``pydoc_data.topics`` (the last ~10% of files / topics, by
sorted name, are held out for evaluation). A byte-level BPE tokenizer (single-digit tokens, BOS/EOS) is trained by
the same script. The default recipe (the committed model) trains on text only; ``--pk-batch``, ``--copy-batch`` and
``--phase1-*`` mix in synthetic pass-key documents in the harness's exact needle prompt format and dense copy
documents (a curriculum that did not produce pass-key retrieval within the CPU budget: see the model card).

    python scripts/train_lab_model.py --out harness/assets/lab_model --seed 0      # train + eval + model card
    python scripts/train_lab_model.py --eval harness/assets/lab_model              # print the eval numbers
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import sysconfig
import time
from pathlib import Path

# passive OpenMP waiting: on a shared, oversubscribed CPU, spinning threads cost ~5x wall time (measured)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

log = logging.getLogger("train_lab_model")

WINDOW = 256
TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
GARBAGE_INF = " ".join([GARBAGE] * 2000)
QUESTION = "What is the pass key? The pass key is"
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "lib2to3", "__pycache__"}
HELD_OUT_FRACTION = 0.1


# ----------------------------------------------------------------------------------------------------------- data
def needle_prompt(n_garbage: int, depth: float, key: int) -> str:
    """The harness's pass-key prompt (reference docs/reference/harness.md §2.4), without the answer."""
    prefix = GARBAGE_INF[: int(depth * n_garbage)]
    suffix = GARBAGE_INF[: n_garbage - len(prefix)]
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    return "\n".join([TASK_DESCRIPTION, prefix, needle, suffix, QUESTION])


def corpus_texts() -> tuple[list[str], list[str], list[str]]:
    """(train texts, held-out texts, held-out names): stdlib .py files and pydoc topics, last 10% of each held out."""
    import pydoc_data.topics as topics

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        (f for f in root.rglob("*.py") if not SKIP_DIRS.intersection(f.relative_to(root).parts)),
        key=lambda f: f.relative_to(root).as_posix(),
    )
    keys = sorted(topics.topics)
    nf, nk = int(len(files) * (1 - HELD_OUT_FRACTION)), int(len(keys) * (1 - HELD_OUT_FRACTION))
    read = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    train = read[:nf] + [topics.topics[k] for k in keys[:nk]]
    held = read[nf:] + [topics.topics[k] for k in keys[nk:]]
    names = [f.relative_to(root).as_posix() for f in files[nf:]] + [f"pydoc_data.topics[{k!r}]" for k in keys[nk:]]
    return train, held, names


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE with individual digit tokens; BOS is prepended by the post-processor (like Llama)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def encode_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """Concatenate texts as token ids, each followed by EOS (no BOS: sequences get one BOS at position 0)."""
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def random_key(rng: random.Random, max_digits: int) -> int:
    """Random key with 1..max_digits digits (uniform digit count)."""
    d = rng.randint(1, max_digits)
    return rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)


def passkey_ids(tokenizer, n_tokens: int, depth: float, key: int) -> tuple[list[int], list[int]]:
    """(prompt ids incl. BOS, answer ids) with len(prompt)+len(answer) <= n_tokens, filler sized to fill it."""
    answer = tokenizer(f" {key}", add_special_tokens=False)["input_ids"]
    budget = n_tokens - len(answer)

    def enc(n_garbage: int) -> list[int]:
        return tokenizer(needle_prompt(n_garbage, depth, key))["input_ids"]

    lo, hi = 0, 4 * budget  # largest n_garbage whose prompt fits (token count is ~monotone in n_garbage)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(enc(mid)) <= budget else (lo, mid - 1)
    prompt = enc(lo)
    return prompt, answer


def passkey_batch(tokenizer, rng: random.Random, bsz: int, min_len: int, max_len: int, max_digits: int):
    """Pass-key training docs (prompt + answer + EOS), right-padded; returns ids, labels, answer mask."""
    docs = []
    for _ in range(bsz):
        prompt, answer = passkey_ids(tokenizer, rng.randint(min_len, max_len) - 1, rng.random(),
                                     random_key(rng, max_digits))
        docs.append((prompt + answer + [tokenizer.eos_token_id], len(prompt), len(answer)))
    T = max(len(d[0]) for d in docs)
    ids = torch.full((bsz, T), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((bsz, T), -100, dtype=torch.long)
    amask = torch.zeros((bsz, T), dtype=torch.bool)
    for i, (d, p, a) in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d)
        labels[i, : len(d)] = torch.tensor(d)
        amask[i, p : p + a] = True
    return ids, labels, amask


def text_batch(stream: torch.Tensor, rng: random.Random, bsz: int, bos: int) -> torch.Tensor:
    """[BOS] + a random window of WINDOW-1 stream tokens, per row."""
    rows = []
    for _ in range(bsz):
        s = rng.randint(0, len(stream) - WINDOW)
        rows.append(torch.cat([torch.tensor([bos]), stream[s : s + WINDOW - 1]]))
    return torch.stack(rows)


# ----------------------------------------------------------------------------------------------------------- training
def lm_loss(model, ids: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted next-token cross-entropy (labels -100 ignored)."""
    logits = model(input_ids=ids).logits[:, :-1]
    tgt = labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100, reduction="none")
    w = (tgt != -100).float().reshape(-1)
    if weights is not None:
        w = w * weights[:, 1:].reshape(-1)
    return (nll * w).sum() / w.sum()


def copy_batch(rng: random.Random, bsz: int, vocab: int, digit_ids: list[int], bos: int) -> torch.Tensor:
    """Dense copy docs ``[BOS] s s`` (s: 8-48 tokens, half digits, half random vocab) that grow induction heads."""
    n = rng.randint(8, 48)
    rows = []
    for _ in range(bsz):
        seq = [rng.choice(digit_ids) if rng.random() < 0.5 else rng.randrange(3, vocab) for _ in range(n)]
        rows.append([bos] + seq + seq)
    return torch.tensor(rows)


def curriculum(step: int, args) -> tuple[int, int, int, int, int, int]:
    """(pass-key docs, their min_len, max_len, max_digits, text windows, copy docs) for a step.

    Phase 1 (``--phase1-steps``): text windows + dense copy docs, no pass-key docs (their answers are pure noise until
    induction heads exist); phase 2: text windows + pass-key docs (80 tokens to the full window, 1-6 digit keys) + a
    few copy docs."""
    if step < args.phase1_steps:
        return 0, 0, 0, 0, args.text_batch, args.phase1_copy_batch
    frac = (step - args.phase1_steps) / max(1, args.steps - args.phase1_steps)
    return args.pk_batch, 80, 192 if frac < 0.2 else WINDOW, 6, args.text_batch, args.copy_batch


def train(args) -> None:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    train_texts, held_texts, _ = corpus_texts()
    # the tokenizer also sees pass-key prompts (its share of the training mix), so the filler gets whole-word tokens
    tok_rng = random.Random(args.seed + 1)
    pk_texts = [needle_prompt(tok_rng.randint(0, 2000), tok_rng.random(), random_key(tok_rng, 6))
                for _ in range(args.tokenizer_passkey_docs)]
    tokenizer = train_tokenizer(train_texts + pk_texts, args.vocab)
    stream = encode_stream(tokenizer, train_texts)
    log.info("tokenizer + corpus: %.1fs, %d train tokens", time.time() - t0, len(stream))

    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=WINDOW, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    model = LlamaForCausalLM(config)
    digit_ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warm = 10
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    )
    t_train, cpu_train = time.time(), time.process_time()
    history, eval_s = [], 0.0
    for step in range(args.steps):
        model.train()
        n_pk, lo, hi, nd, n_text, n_copy = curriculum(step, args)
        loss_pk = loss_tx = torch.zeros(())
        if n_pk:
            ids, labels, amask = passkey_batch(tokenizer, rng, n_pk, lo, hi, nd)
            loss_pk = lm_loss(model, ids, labels, 1.0 + (args.answer_weight - 1.0) * amask.float())
        if n_text:
            x = text_batch(stream, rng, n_text, tokenizer.bos_token_id)
            loss_tx = lm_loss(model, x, x)
        loss_copy = torch.zeros(())
        if n_copy:
            c = copy_batch(rng, n_copy, len(tokenizer), digit_ids, tokenizer.bos_token_id)
            loss_copy = lm_loss(model, c, c)
        (loss_pk + loss_tx + loss_copy).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % args.log_every == 0 or step == args.steps - 1:
            t_ev = time.time()
            model.eval()
            acc = answer_accuracy(model, tokenizer, random.Random(1234), WINDOW, n=16)
            acc3 = answer_accuracy(model, tokenizer, random.Random(1234), 128, n=16, keys=(100, 999))
            eval_s += time.time() - t_ev
            history.append({"step": step, "text_loss": round(loss_tx.item(), 4),
                            "passkey_loss": round(loss_pk.item(), 4), "copy_loss": round(loss_copy.item(), 4),
                            "tf_passkey_acc_256": acc,
                            "tf_acc_3digit_128": acc3, "load": round(os.getloadavg()[0], 1),
                            "train_s": round(time.time() - t_train - eval_s, 1)})
            log.info("%s", history[-1])
    train_s = time.time() - t_train - eval_s
    cpu_s = time.process_time() - cpu_train
    log.info("training: %.1fs for %d steps (+%.1fs of progress evals)", train_s, args.steps, eval_s)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"seed": args.seed, "argv": sys.argv[1:], "n_params": n_params, "train_tokens_in_stream": len(stream),
            "train_seconds": round(train_s, 1),
            "train_cpu_seconds_incl_progress_evals": round(cpu_s, 1), "python": sys.version.split()[0],
            "torch": torch.__version__, "load_avg": round(sum(h["load"] for h in history) / len(history), 1),
            "history": history}
    (out / "training_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    results = evaluate(out, args)
    write_card(out, meta, results, args)


@torch.no_grad()
def answer_accuracy(model, tokenizer, rng: random.Random, length: int, n: int = 32,
                    keys: tuple[int, int] = (50000, 500000)) -> float:
    """Teacher-forced exact-match of all answer tokens on n pass-key prompts of ~length tokens (cheap proxy)."""
    hits = 0
    for i in range(n):
        prompt, answer = passkey_ids(tokenizer, length, (i % 16 + 1) / 16, rng.randint(*keys))
        ids = torch.tensor([prompt + answer])
        pred = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].argmax(-1)
        hits += int(pred.tolist() == answer)
    return hits / n


# ----------------------------------------------------------------------------------------------------------- eval
@torch.no_grad()
def heldout_nll(model, tokenizer, length: int = 2048, n_seq: int = 16) -> dict[str, float]:
    """Mean NLL per position bucket on n_seq held-out sequences of [BOS] + (length-1) tokens, evenly spread."""
    _, held, _ = corpus_texts()
    stream = encode_stream(tokenizer, held)
    step = (len(stream) - length) // n_seq
    nll = torch.zeros(length - 1)
    for i in range(n_seq):
        ids = torch.cat([torch.tensor([tokenizer.bos_token_id]), stream[i * step : i * step + length - 1]])[None]
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll += F.cross_entropy(logits, ids[0, 1:], reduction="none")
    nll /= n_seq  # nll[j] = loss of predicting the token at position j+1
    buckets = {"[0,256)": (0, 255), "[128,256)": (127, 255), "[256,512)": (255, 511), "[512,1024)": (511, 1023),
               "[1024,2048)": (1023, 2047)}
    return {k: round(nll[a:b].mean().item(), 4) for k, (a, b) in buckets.items() if b <= length - 1}


@torch.no_grad()
def passkey_accuracy(model, tokenizer, length: int, trials_per_depth: int = 2, seed: int = 42) -> dict:
    """Greedy pass-key retrieval (harness scoring: key substring of the decoded output), 16 depths (1/16..16/16)."""
    rng = random.Random(seed)
    per_depth = {}
    for d in range(1, 17):
        hits = 0
        for _ in range(trials_per_depth):
            key = rng.randint(50000, 500000)
            prompt, answer = passkey_ids(tokenizer, length, d / 16, key)
            out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=len(answer) + 2, do_sample=False)
            hits += int(str(key) in tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True))
        per_depth[d / 16] = hits / trials_per_depth
    return {"accuracy": round(sum(per_depth.values()) / 16, 4), "per_depth": per_depth,
            "trials": 16 * trials_per_depth, "prompt_tokens": len(prompt)}


def evaluate(model_dir: Path, args) -> dict:
    """Held-out NLL by position bucket and pass-key accuracy at 256/512/1024 tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    t0 = time.time()
    res = {"nll": heldout_nll(model, tokenizer, 2048, args.eval_seqs)}
    for length in (256, 512, 1024):
        res[f"passkey_{length}"] = passkey_accuracy(model, tokenizer, length, args.eval_trials)
    res["eval_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))
    return res


PASSKEY_NOTE = """The model does not retrieve pass keys: copying a key needs induction heads, which did not form
within the 10-minute CPU budget. Measured attempts (all 4 layers x hidden 128, seed 0): (1) a pass-key-first
curriculum (1000 steps of pass-key documents, then 700 of text; 1975 s on a contended CPU) reached 0/32 retrieval at
256 tokens and held-out NLL 4.91; (2) text + dense copy documents (`[BOS] s s`) + pass-key documents (lr 2e-3): after
400 steps the copy-document loss was still 5.5 nats (no copying) and teacher-forced key accuracy 0/16, at 0.9 s per
step. The lab demo therefore shows perplexity; pass-key retrieval is shown on SmolLM2 (`make demo-real`). The options
`--pk-batch`, `--copy-batch` and `--phase1-*` keep the synthetic-document curriculum available for longer runs.
"""


def mix_description(args) -> str:
    """The training mix, in words, for the model card."""
    text = f"Each step: {args.text_batch} text windows of {WINDOW} tokens (`[BOS]` + {WINDOW - 1} stream tokens)"
    if not (args.pk_batch or args.copy_batch or args.phase1_copy_batch):
        return (text + ", nothing else (no synthetic documents; the tokenizer's training texts also included "
                f"{args.tokenizer_passkey_docs} harness pass-key prompts so that their filler gets whole-word tokens).")
    return (f"{text}. Synthetic pass-key documents use the harness needle format (task line, garbage filler, needle "
            f"line, filler, `What is the pass key? The pass key is` + ` {{key}}` + EOS; random depth, total length <= "
            f"{WINDOW}); the tokenizer also saw {args.tokenizer_passkey_docs} such prompts. Dense copy docs "
            f"`[BOS] s s` (s: 8-48 random tokens, half of them digits) bootstrap induction heads. Phase 1 (steps 0-"
            f"{args.phase1_steps - 1}): text + {args.phase1_copy_batch} copy docs per step. Phase 2 (to step "
            f"{args.steps - 1}): text + {args.pk_batch} pass-key docs of 80-{WINDOW} tokens with 1-6 digit keys + "
            f"{args.copy_batch} copy docs. Answer tokens weighted x{args.answer_weight}.")


def write_card(out: Path, meta: dict, res: dict, args) -> None:
    """Write the model card README.md from measured numbers."""
    _, _, held_names = corpus_texts()
    cfg = json.loads((out / "config.json").read_text())
    argv, skip = [], False  # the training command, minus output dir / logging options (they do not change weights)
    for a in meta["argv"]:
        if skip or a in ("--out", "--log-every"):
            skip = not skip
            continue
        argv.append(a)
    nll = res["nll"]
    pk_rows = "\n".join(
        f"| {n} | {res[f'passkey_{n}']['prompt_tokens']} | {res[f'passkey_{n}']['accuracy']:.3f} | "
        + " ".join(f"{v:.1f}" for v in res[f"passkey_{n}"]["per_depth"].values()) + " |"
        for n in (256, 512, 1024)
    )
    card = f"""# lab_model: tiny Llama RoPE LM with a 256-token window

Generated by `scripts/train_lab_model.py` (all numbers below measured by its `--eval` mode).

- Architecture: `LlamaForCausalLM`, {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']},
  {cfg['num_attention_heads']} heads (head_dim {cfg['hidden_size'] // cfg['num_attention_heads']}), MLP
  {cfg['intermediate_size']}, tied embeddings, RoPE theta 10000 (default), **max_position_embeddings {WINDOW}**,
  vocab {cfg['vocab_size']}, {meta['n_params']:,} parameters, fp32 safetensors.
- Tokenizer: byte-level BPE (`tokenizers`, vocab {args.vocab}), digits split into single-digit tokens,
  `<pad>`=0, `<s>`=1 (BOS, prepended automatically), `</s>`=2 (EOS).
- Data: Python {meta['python']} standard-library `.py` sources (no `test`/`idle_test`/`lib2to3` dirs) and
  `pydoc_data.topics`; sorted by name, the last {int(HELD_OUT_FRACTION * 100)}% of files and topics are held out
  ({len(held_names)} items, `{held_names[0]}` ... `{held_names[-1]}`). {meta['train_tokens_in_stream']:,} training
  tokens. {mix_description(args)}
- Training: seed {meta['seed']}, {args.steps} steps, AdamW lr {args.lr} (10-step warmup, cosine to 10%), betas
  (0.9, 0.95), weight decay 0.1, grad clip 1, 2 CPU threads, fp32. Measured training time: **{meta['train_seconds']} s
  wall** on a 2-core machine (mean 1-min load average during training {meta.get('load_avg', '?')}), CPU time
  {meta['train_cpu_seconds_incl_progress_evals']} s (incl. progress evals); torch {meta['torch']}.
- Command: `{' '.join(['python scripts/train_lab_model.py --out harness/assets/lab_model'] + argv)}`

## Held-out NLL (nats/token) by position, plain model
{args.eval_seqs} held-out sequences of 2048 tokens (`[BOS]` + 2047), causal, so the [0,256) bucket equals the
in-window loss of 256-token sequences; [128,256) is the fair in-window reference for later buckets (early positions
have little context and cost more). Past the window the loss rises with distance: the effect the methods repair.

| [0,256) in window | [128,256) | [256,512) | [512,1024) | [1024,2048) |
| --- | --- | --- | --- | --- |
| {nll['[0,256)']} | {nll['[128,256)']} | {nll['[256,512)']} | {nll['[512,1024)']} | {nll['[1024,2048)']} |

## Pass-key retrieval (greedy, key substring of output), plain model
Keys `randint(50000, 500000)` as in the harness, {res['passkey_256']['trials']} trials per length over depths
1/16 ... 16/16 (per-depth accuracy in depth order).

| length | prompt tokens | accuracy | per depth |
| --- | --- | --- | --- |
{pk_rows}

{PASSKEY_NOTE}
Reproduce the numbers: `python scripts/train_lab_model.py --eval harness/assets/lab_model` ({res['eval_seconds']} s).
Reproduce the weights: `python scripts/train_lab_model.py --out DIR` (the defaults are this recipe); with the same
torch build and 2 threads the result is bit-identical (checked: equal sha256 of model.safetensors and tokenizer.json).
"""
    (out / "README.md").write_text(card)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="harness/assets/lab_model")
    p.add_argument("--eval", metavar="MODEL_DIR", help="only evaluate an existing model dir")
    p.add_argument("--write-card", action="store_true",
                   help="with --eval: rewrite MODEL_DIR/README.md from training_meta.json and the new eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=950)
    p.add_argument("--phase1-steps", type=int, default=0)
    p.add_argument("--phase1-copy-batch", type=int, default=0)
    p.add_argument("--copy-batch", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--text-batch", type=int, default=16)
    p.add_argument("--pk-batch", type=int, default=0)
    p.add_argument("--answer-weight", type=float, default=4.0)
    p.add_argument("--tokenizer-passkey-docs", type=int, default=500)
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("--eval-seqs", type=int, default=16)
    p.add_argument("--eval-trials", type=int, default=2, help="trials per depth (16 depths)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    if args.eval:
        model_dir = Path(args.eval)
        if args.write_card:
            meta = json.loads((model_dir / "training_meta.json").read_text())
            train_args = p.parse_args(meta["argv"])
            train_args.eval_seqs, train_args.eval_trials = args.eval_seqs, args.eval_trials
            write_card(model_dir, meta, evaluate(model_dir, train_args), train_args)
        else:
            evaluate(model_dir, args)
    else:
        train(args)


if __name__ == "__main__":
    main()
