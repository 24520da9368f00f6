#!/usr/bin/env bash
# The group advantages' GPU checks as one short run on a CUDA machine that cannot reach PyPI
# (the device tool's H100/H200: torch, triton, cmake, pytest, pytest-benchmark and hypothesis
# are there; vipfast's pinned build requirements are not).
#
#   bash benches/gpu_checks.sh prepare        # here, with PyPI: the pinned build wheels into .whl/
#   bash benches/gpu_checks.sh run            # there, with .whl carried: build, CUDA tests, GPU benches
#
# `run` writes gpu_tests.log, gpu_benches.log and advantages_gpu.json to $OUT (or ./gpu-results).
# Not yet timed on a GPU; the CPU dry run (build + collection, everything skipped) takes 47 s.
set -euo pipefail
cd "$(dirname "$0")/.."

build_requirements() {
  python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'
}

prepare() {
  rm -rf .whl && mkdir .whl
  # cmeel-eigen needs cmeel at build time; both are pure-Python wheels, like the other two.
  build_requirements | xargs python3 -m pip download -q --no-deps --only-binary=:all: -d .whl cmeel
  grep -qxF /.whl/ .gitignore || echo "warning: .whl/ is not git-ignored" >&2
  ls .whl
}

run() {
  local out status=0
  out=$(realpath -m "${OUT:-gpu-results}")
  mkdir -p "$out"
  python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible to torch"'
  python3 -m pip install -q --no-index --no-deps --target /tmp/vipfast-build .whl/*.whl
  # The pinned build backend and pybind11 shadow whatever versions the machine's image carries.
  PYTHONPATH=/tmp/vipfast-build python3 -m pip install -q --no-index --no-deps --no-build-isolation .
  # From outside the checkout, so that `import vipfast` is the installed package with its _core.
  cd /tmp
  python3 -c 'import torch, triton, vipfast
print("vipfast", vipfast.__version__, "torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' |
    tee "$out/gpu_tests.log"
  python3 -m pytest -q -p no:cacheprovider -m gpu "$OLDPWD/tests/test_advantages.py" 2>&1 |
    tee -a "$out/gpu_tests.log" || status=$?
  python3 -m pytest -q -p no:cacheprovider "$OLDPWD/benches/bench_advantages.py" -k gpu --benchmark-only \
    --benchmark-json="$out/advantages_gpu.json" 2>&1 | tee "$out/gpu_benches.log" || status=$?
  return "$status"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash benches/gpu_checks.sh prepare|run" >&2; exit 2 ;;
esac
