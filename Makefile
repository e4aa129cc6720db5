# keel - thin wrapper over CMake. `make demo` and `make test` are the two commands in the README.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 600

.PHONY: all build deps test unit asan system demo demo-kv bench fuzz soak clean format

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# Everything: release unit tests, the same under ASan+UBSan, then the system tests.
test: deps
	@bash scripts/test.sh

# The shop under load and chaos (docs/shop.md); demo-kv: the KV cluster and its lincheck.
demo: deps build
	@bash scripts/demo.sh

demo-kv: deps build
	@bash scripts/demo_kv.sh

bench: build
	@bash scripts/deps.sh --bench
	@bash bench/run.sh

fuzz: deps
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

soak: build
	@bash scripts/soak.sh $(SOAK_SECONDS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
