#!/usr/bin/python3
"""fbt against the PyTorch peer on the speed targets (docs/PERFORMANCE.md): `./run bench`.

Shared machines change speed from minute to minute, so each config runs in rounds that alternate
fbt and the peer (same threads), and the ratio is taken between the medians of the rounds. The
peer runs at its best: its OpenBLAS is given the newest kernels the CPU runs (OPENBLAS_CORETYPE,
chosen from the CPU's flags: Debian's OpenBLAS may not know the CPU model and fall back to old
kernels), and where a config's windows hold one query the peer runs both ways it can attend
(batched products and elementwise, bench/peer.py) and fbt is compared with the faster. fbt runs as
a user runs it, in the environment it was given; its fraction of the machine's peak (its own
SGEMM rate, measured in the same run) is printed beside each ratio. On "long", fbt runs twice per
round: keeping every activation, and with train.recompute.

Usage: /usr/bin/python3 bench/compare.py [--fbt BINARY] [CONFIG_NAME ...]
       (default: code_feedback code_xl kjv exact windowed long)
       ... compare.py gpu_exact gpu_windowed                 (on a GPU machine: both on the GPU)
--fbt: the fbt binary to time (default build/fbt), e.g. another build for a before/after.
"""
import json, os, statistics, subprocess, sys

# config -> (timed steps per run, rounds): five rounds, so that one slow minute of the machine or one
# run of the peer in its fast or slow mode moves the median little; the long peer needs ~5 GB and
# ~35 s a step: three rounds of one step
PLAN = {"code_feedback": (4, 5), "code_xl": (4, 5), "kjv": (4, 5), "exact": (5, 5), "windowed": (3, 5), "long": (1, 3),
        "gpu_exact": (3, 2), "gpu_windowed": (3, 2)}
CPU_CONFIGS = ["code_feedback", "code_xl", "kjv", "exact", "windowed", "long"]
# config -> the fbt variants timed in each round (--set overrides), the first the one compared for speed
VARIANTS = {"long": [[], ["train.recompute=true"]]}
# configs whose feedback windows hold one query: the peer also attends elementwise (the faster is
# compared). Not "long": there elementwise is half as fast and keeps ~21 GB for autograd.
SINGLE_QUERY = {"code_feedback", "kjv", "exact"}
# configs whose sampling speed (batch 1, tokens generated after the timed steps) fbt reports too
SAMPLE_TOKENS = {"code_feedback": 500, "kjv": 500, "exact": 500}


def cpu_field(name):
    """A field of the first CPU in /proc/cpuinfo ("model name", "flags"), "" if absent."""
    for line in open("/proc/cpuinfo"):
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def newest_openblas_core(flags):
    """The newest OpenBLAS x86-64 kernel family these CPU flags run (OPENBLAS_CORETYPE), or None."""
    if {"amx_tile", "avx512_fp16"} <= flags:
        return "SapphireRapids"
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_bf16"} <= flags:
        return "Cooperlake"
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    args = sys.argv[1:]
    fbt_bin = "build/fbt"
    if args[:1] == ["--fbt"]:
        fbt_bin, args = args[1], args[2:]
    names = args or CPU_CONFIGS  # the GPU configs on request (a GPU machine)
    peer_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    core = newest_openblas_core(set(cpu_field("flags").split()))
    if core:
        peer_env["OPENBLAS_CORETYPE"] = core
    print(f"CPU: {cpu_field('model name') or 'unknown'}; the peer's OPENBLAS_CORETYPE: {core or '(unset)'}; fbt: {fbt_bin}, environment as given",
          flush=True)
    blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    print(f"the peer's BLAS: {blas}", flush=True)
    if "openblas" not in blas:  # the reference BLAS: the peer would run at a fraction of its speed
        print("warning: torch will load the reference BLAS, not OpenBLAS (apt-get install libopenblas0-openmp)", flush=True)
    for name in names:
        steps, rounds = PLAN[name]
        config = f"bench/{name}.yaml"
        gpu = name.startswith("gpu_")
        fbt_cmd = [fbt_bin, "bench", "--config", config, "--steps", str(steps)] + (["--set", "train.device=cuda"] if gpu else [])
        if name in SAMPLE_TOKENS:
            fbt_cmd += ["--sample", str(SAMPLE_TOKENS[name])]
        peer_cmd = [sys.executable if gpu else "/usr/bin/python3", "bench/peer.py", config, "--steps", str(steps),
                    "--device", "cuda" if gpu else "cpu"]
        variants = VARIANTS.get(name, [[]])
        peer_variants = [[], ["--single-query", "elementwise"]] if name in SINGLE_QUERY and not gpu else [[]]
        fbt, peer = [[] for _ in variants], [[] for _ in peer_variants]
        for r in range(rounds):
            for v, sets in enumerate(variants):
                fbt[v].append(run(fbt_cmd + [a for s in sets for a in ("--set", s)]))
            for v, extra in enumerate(peer_variants):
                peer[v].append(run(peer_cmd + extra, peer_env))
            line = ", ".join(f"fbt{' ' + ' '.join(sets) if sets else ''} {fbt[v][-1]['tokens_per_s']:.0f} tok/s "
                             f"({fbt[v][-1]['peak_rss_mb']:.0f} MB)" for v, sets in enumerate(variants))
            pline = ", ".join(f"pytorch{' ' + extra[-1] if extra else ''} {peer[v][-1]['tokens_per_s']:.0f} tok/s "
                              f"({peer[v][-1]['peak_rss_mb']:.0f} MB)" for v, extra in enumerate(peer_variants))
            print(f"{name} round {r + 1}: {line}; {pline}; fbt's gemm {fbt[0][-1]['sgemm_peak_gflops']:.0f} GFLOP/s",
                  flush=True)
        medians = [statistics.median(x["tokens_per_s"] for x in pv) for pv in peer]
        best = max(range(len(peer)), key=lambda v: medians[v])  # the peer at its best
        p = medians[best]
        p_rss = max(x["peak_rss_mb"] for x in peer[best])
        peer_label = f" (pytorch {peer_variants[best][-1]})" if peer_variants[best] else ""
        f0 = statistics.median(x["tokens_per_s"] for x in fbt[0])
        for v, sets in enumerate(variants):
            f = statistics.median(x["tokens_per_s"] for x in fbt[v])
            f_rss = max(x["peak_rss_mb"] for x in fbt[v])
            peak = statistics.median(x["fraction_of_peak"] for x in fbt[v])
            label = name + (" " + " ".join(sets) if sets else "")
            extra = f"; {f / f0:.2f} of fbt's speed without it" if v else ""
            print(f"{label:<13} tokens/s {f:.0f} vs {p:.0f}{peer_label}: {f / p:.2f}x   fbt at {100 * peak:.0f}% of peak   "
                  f"peak RSS {f_rss:.0f} MB vs {p_rss:.0f} MB: {f_rss / p_rss:.3f}x{extra}", flush=True)
        if name in SAMPLE_TOKENS:
            sample = statistics.median(x["sample_tokens_per_s"] for x in fbt[0])
            print(f"{name:<13} fbt samples {sample:.0f} tokens/s at batch 1", flush=True)
        if gpu:
            f_dev = max(x["peak_device_mb"] for x in fbt[0])
            p_dev = max(x["peak_gpu_mb"] for x in peer)
            print(f"{name:<9} peak GPU memory {f_dev:.0f} MB vs {p_dev:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
