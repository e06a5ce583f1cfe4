"""omni_img's class-conditional decoder against LlamaGen's eager PyTorch GPT, same CPU.

    python benchmarks/bench_llamagen.py --llamagen DIR [--quick] [--json OUT]

DIR is a checkout of LlamaGen's repository (github.com/FoundationVision/LlamaGen; its
code is not part of this project and is only imported from DIR). Two fixed sizes, fp32,
class-conditional, AdamW + global-norm clipping, dropout off on both sides:
  (a) width 256, 4 layers, 4 heads, vocab 1024, 64 tokens (8x8), batch 32;
  (b) width 512, 8 layers, 8 heads, vocab 4096, 256 tokens (16x16), batch 8.
SwiGLU widths match LlamaGen's rule (768 and 1536). Differences that remain: LlamaGen
uses a 2-D RoPE, omni_img a 1-D RoPE plus learned 2-D positions; omni_img's embedding
table holds the class start tokens, LlamaGen has a separate class embedding.

Figures: train step time (median after warm-up; ours jitted, on one fake CPU device
unless --train_devices splits its batch; theirs eager with oneDNN),
and sampling time per image at batch 1 and 8, CFG scale 4, temperature 1, all tokens
(ours: one compiled decode loop with a KV cache; theirs: their `generate`, which also
uses a KV cache, one Python call per token). Without --llamagen only our side runs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import QUIET_SHARE, OtherLoad, emit, median_seconds, run_child  # noqa: E402

SIZES = {
    "a": {"dim": 256, "layers": 4, "heads": 4, "vocab": 1024, "side": 8, "batch": 32},
    "b": {"dim": 512, "layers": 8, "heads": 8, "vocab": 4096, "side": 16, "batch": 8},
}
CFG_SCALE = 4.0


def ours_sampling(size: str, batch: int, repeats: int) -> float:
    """Seconds per image of omni_img's c2i decoder at `size`, batch `batch`, CFG 4."""
    import jax
    import numpy as np

    from omni_img.models import generator as g
    from omni_img.sampling import ar

    s = SIZES[size]
    mlp = {256: 768, 512: 1536}[s["dim"]]
    cfg = g.GeneratorConfig(
        image_vocab_size=s["vocab"], grid_h=s["side"], grid_w=s["side"], num_classes=1000,
        use_source=False, max_history_len=0, dim=s["dim"], num_heads=s["heads"],
        dec_layers=s["layers"], mlp_dim=mlp,
    )  # fmt: skip
    model = g.make_generator(cfg)
    cond = {"class_id": np.arange(batch, dtype=np.int32) % 1000}
    target = np.zeros((1, s["side"], s["side"]), np.int32)
    example = {"class_id": cond["class_id"][:1], "target_tokens": target}
    params = jax.jit(model.init)(jax.random.key(0), example)["params"]
    scfg = ar.SamplingConfig(temperature=1.0, cfg_scale=CFG_SCALE)
    keys = iter(range(10_000))

    def sample():
        jax.block_until_ready(ar.sample(model, params, cond, jax.random.key(next(keys)), scfg))

    return median_seconds(sample, repeats) / batch


def theirs(size: str, llamagen: str, train_steps: int, sample_repeats: int) -> dict:
    """LlamaGen's GPT at `size`: train step seconds, seconds per image at batch 1 and 8."""
    sys.path.insert(0, llamagen)
    import torch

    try:
        from autoregressive.models.generate import generate
        from autoregressive.models.gpt import ModelArgs, Transformer
    except ModuleNotFoundError as e:
        sys.exit(f"--llamagen {llamagen}: not a LlamaGen checkout ({e}); pass its root folder")

    s = SIZES[size]
    torch.manual_seed(0)
    args = ModelArgs(
        dim=s["dim"], n_layer=s["layers"], n_head=s["heads"], vocab_size=s["vocab"],
        block_size=s["side"] ** 2, num_classes=1000, cls_token_num=1, model_type="c2i",
        token_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0,
        class_dropout_prob=0.1,
    )  # fmt: skip
    model = Transformer(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    tokens = torch.randint(0, s["vocab"], (s["batch"], s["side"] ** 2))
    labels = torch.randint(0, 1000, (s["batch"],))

    def train_step():
        model.train()
        _, loss = model(idx=tokens[:, :-1], cond_idx=labels, targets=tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step_s = median_seconds(train_step, train_steps, warmup=2)
    model.eval()
    per_image = {}
    for batch in (1, 8):
        cond = torch.arange(batch) % 1000

        def sample(cond=cond):
            generate(model, cond, s["side"] ** 2, cfg_scale=CFG_SCALE, temperature=1.0, top_k=0,
                     top_p=1.0, sample_logits=True)  # fmt: skip

        per_image[batch] = median_seconds(sample, sample_repeats) / batch
    params = sum(p.numel() for p in model.parameters())
    return {"train_step_s": step_s, "sample_s_per_image": per_image, "params": params,
            "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamagen", default="", help="a checkout of LlamaGen's repository")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--allow_busy", action="store_true",
        help="keep a comparison that other processes disturbed (marked as such), exit 0",
    )  # fmt: skip
    parser.add_argument(
        "--train_devices", type=int, default=1,
        help="fake CPU devices our train step's batch is split over (XLA:CPU runs most of "
        "one device's ops on one thread, torch every op on all its threads)",
    )  # fmt: skip
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # SIZE BATCH
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    if args.child:
        import json

        size, batch = args.child
        print(json.dumps({"sample_s_per_image": ours_sampling(size, int(batch), repeats)}))
        return
    results, rows = [], []
    for size in SIZES:
        train_argv = [str(ROOT / "benchmarks" / "bench_train.py"), "--child", f"llamagen_{size}",
                      str(args.train_devices), "data"] + ["--quick"] * args.quick  # fmt: skip
        with OtherLoad() as ours_load:
            step = run_child(train_argv, args.train_devices)
            ours = {"train_step_s": step["step_s"], "params": step["params"],
                    "train_devices": args.train_devices, "sample_s_per_image": {}}  # fmt: skip
            for batch in (1, 8):
                argv = [__file__, "--child", size, str(batch)] + ["--quick"] * args.quick
                ours["sample_s_per_image"][batch] = run_child(argv, 1)["sample_s_per_image"]
        entry = {"size": size, **SIZES[size], "omni_img": ours}
        if args.llamagen:
            with OtherLoad() as load:
                entry["llamagen_torch"] = theirs(size, args.llamagen, repeats + 1, repeats)
            entry["other_cpu_share"] = {"omni_img": ours_load.share, "llamagen": load.share}
        results.append(entry)
        name = f"llamagen size ({size})"
        figures = [("train step ms", "train_step_s", None)] + [
            (f"sample ms/image b{b}", "sample_s_per_image", b) for b in (1, 8)
        ]
        for metric, key, batch in figures:
            mine = ours[key] if batch is None else ours[key][batch]
            other = entry.get("llamagen_torch")
            theirs_s = (
                None if other is None else (other[key] if batch is None else other[key][batch])
            )
            note = (
                "no LlamaGen checkout given"
                if theirs_s is None
                else (f"LlamaGen eager torch {1e3 * theirs_s:.1f} ms: {theirs_s / mine:.2f}x ours")
            ) + load_note(entry.get("other_cpu_share"))
            rows.append({"row": f"{name}, omni_img", "metric": metric, "value": 1e3 * mine,
                         "note": note})  # fmt: skip
    emit("llamagen", results, rows, args.json)
    disturbed = [r["size"] for r in results if not comparison_quiet(r.get("other_cpu_share"))]
    if args.llamagen and disturbed and not args.allow_busy:
        sys.exit(
            f"bench_llamagen: other processes used more than {QUIET_SHARE:.0%} of the CPUs "
            f"during size(s) {', '.join(disturbed)}: not a comparison; rerun on a quiet "
            "machine (--allow_busy keeps it, marked)"
        )


def comparison_quiet(shares: dict | None) -> bool:
    """Both sides timed with other processes at or under QUIET_SHARE of the CPUs (an
    unmeasured load, where /proc/stat is missing, counts as quiet: nothing says not)."""
    return all(s is None or s <= QUIET_SHARE for s in (shares or {}).values())


def load_note(shares: dict | None) -> str:
    if not shares:
        return ""
    figures = ", ".join(
        f"{side} {'?' if s is None else f'{100 * s:.0f} %'}" for side, s in shares.items()
    )
    mark = "" if comparison_quiet(shares) else "NOT QUIET: "
    return f"; {mark}other processes' CPU share: {figures}"


if __name__ == "__main__":
    main()
