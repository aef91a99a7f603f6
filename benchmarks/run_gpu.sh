#!/usr/bin/env bash
# One GPU session: build the CUDA extension for this GPU, run the GPU-marked tests, the whole suite,
# and the GPU benchmarks. Usage (on a machine with nvcc, torch with CUDA, pybind11, cmake, ninja):
#   LOG_DIR=/some/dir bash benchmarks/run_gpu.sh [build|tests|suite|bench ...]   (default: all)
set -u -o pipefail
LOG_DIR=${LOG_DIR:-gpu-logs}
mkdir -p "$LOG_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYINVERSE_CUDA=ON PYINVERSE_CUDA_ARCHS=${PYINVERSE_CUDA_ARCHS:-90}
steps=${*:-build tests suite bench}
for step in $steps; do
  case $step in
    build)
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$LOG_DIR/device.txt"
      { time $PY setup.py build_ext --inplace --build-temp build/gpu; } 2>&1 | tail -40 | tee "$LOG_DIR/build.log"
      $PY -m pyinverse config | tee -a "$LOG_DIR/device.txt" ;;
    tests)
      $PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$LOG_DIR/gpu_tests.log" ;;
    suite)
      OMP_NUM_THREADS=4 $PY -m pytest -q -p no:cacheprovider tests -n 4 --timeout 300 > "$LOG_DIR/suite.log" 2>&1
      tail -40 "$LOG_DIR/suite.log" ;;
    bench)
      $PY -m pytest -p no:cacheprovider benchmarks/bench_gpu.py --benchmark-enable --benchmark-group-by=param:case \
        --benchmark-columns=median,iqr,min,rounds --benchmark-sort=mean --benchmark-json="$LOG_DIR/bench_gpu.json" \
        2>&1 | tee "$LOG_DIR/bench_gpu.log" ;;
  esac
done
