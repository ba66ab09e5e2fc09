# Convenience wrapper around CMake. `make demo` and `make test` are the README's two commands.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps build demo test test-asan gpu-test clean

all: build

deps:
	@scripts/install-deps.sh

# build installs nothing (it needs the packages scripts/install-deps.sh installs); demo and test do.
build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The main job on the embedded default corpus (Tiny Shakespeare): CPU without a GPU, all GPUs with.
demo: deps
	@$(MAKE) --no-print-directory build
	@scripts/demo.sh $(BUILD)/zgpt

# The whole test suite: unit + CLI tests, then the unit tests again under ASan + UBSan.
test: deps
	@$(MAKE) --no-print-directory build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -LE gpu
	@$(MAKE) --no-print-directory test-asan

test-asan: deps
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DZGPT_SANITIZE=ON -DZGPT_CUDA=OFF >/dev/null
	@cmake --build $(BUILD)-asan -j$(JOBS)
	@cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j$(JOBS) -L unit

# GPU tests (run on a machine with a GPU, e.g. through the device tool).
gpu-test: deps
	@cmake -S . -B $(BUILD)-gpu -DCMAKE_BUILD_TYPE=Release -DZGPT_GPU_TESTS=ON >/dev/null
	@cmake --build $(BUILD)-gpu -j$(JOBS)
	@cd $(BUILD)-gpu && ctest --output-on-failure -L gpu

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-gpu
