#!/usr/bin/python3
"""fbt against the PyTorch peer on the speed targets (docs/PERFORMANCE.md): `./run bench`.

Shared machines change speed from minute to minute, so each config runs in rounds that alternate
fbt and the peer (same threads), and the ratio is taken between the medians of the rounds. The
peer runs at its best: OpenBLAS picks its own kernels (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset).

Usage: /usr/bin/python3 bench/compare.py [--fbt BINARY] [CONFIG_NAME ...]   (default: exact windowed long)
       ... compare.py gpu_exact gpu_windowed                 (on a GPU machine: both on the GPU)
--fbt: the fbt binary to time (default build/fbt), e.g. another build for a before/after.
"""
import json, os, statistics, subprocess, sys

# config -> (timed steps per run, rounds): five rounds, so that one slow minute of the machine or one
# run of the peer in its fast or slow mode moves the median little; the long peer needs ~20 GB and
# ~45 s a step: one round
PLAN = {"exact": (5, 5), "windowed": (3, 5), "long": (1, 1), "gpu_exact": (3, 2), "gpu_windowed": (3, 2)}


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    args = sys.argv[1:]
    fbt_bin = "build/fbt"
    if args[:1] == ["--fbt"]:
        fbt_bin, args = args[1], args[2:]
    names = args or ["exact", "windowed", "long"]  # the GPU configs on request (a GPU machine)
    peer_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    for name in names:
        steps, rounds = PLAN[name]
        config = f"bench/{name}.yaml"
        gpu = name.startswith("gpu_")
        fbt_cmd = [fbt_bin, "bench", "--config", config, "--steps", str(steps)] + (["--set", "train.device=cuda"] if gpu else [])
        peer_cmd = [sys.executable if gpu else "/usr/bin/python3", "bench/peer.py", config, "--steps", str(steps),
                    "--device", "cuda" if gpu else "cpu"]
        fbt, peer = [], []
        for r in range(rounds):
            fbt.append(run(fbt_cmd))
            peer.append(run(peer_cmd, peer_env))
            print(f"{name} round {r + 1}: fbt {fbt[-1]['tokens_per_s']:.0f} tok/s ({fbt[-1]['gflops']:.0f} GFLOP/s, "
                  f"{fbt[-1]['fraction_of_peak']:.2f} of a {fbt[-1]['sgemm_peak_gflops']:.0f} GFLOP/s SGEMM), "
                  f"pytorch {peer[-1]['tokens_per_s']:.0f} tok/s", flush=True)
        f = statistics.median(x["tokens_per_s"] for x in fbt)
        p = statistics.median(x["tokens_per_s"] for x in peer)
        f_rss = max(x["peak_rss_mb"] for x in fbt)
        p_rss = max(x["peak_rss_mb"] for x in peer)
        print(f"{name:<9} tokens/s {f:.0f} vs {p:.0f}: {f / p:.2f}x   peak RSS {f_rss:.0f} MB vs {p_rss:.0f} MB: "
              f"{p_rss / f_rss:.2f}x less", flush=True)
        if gpu:
            f_dev = max(x["peak_device_mb"] for x in fbt)
            p_dev = max(x["peak_gpu_mb"] for x in peer)
            print(f"{name:<9} peak GPU memory {f_dev:.0f} MB vs {p_dev:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
