# Two entry points: `make demo` and `make test`. Both create .venv with nothing but Python.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# PyTorch pinned to the build this project is tested with; on other machines pick your CUDA build.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# Debian packages the tests need (chromium renders the stats report; ffmpeg: the shared libraries torchcodec
# loads); installed only where apt-get exists and we are root.
APT_PACKAGES ?= chromium ffmpeg

.PHONY: demo test install install-test system-deps bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[all]'
	touch $@

install: $(VENV)/.installed

system-deps:
	@if [ -n "$(APT_PACKAGES)" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES); fi

demo: install
	$(PY) -m demo --out data/demo --fresh

test: install system-deps
	$(PY) -m pytest -q

# Benchmarks are run by hand and print ratios measured in one run; see each file's docstring.
bench: install
	$(PY) bench/crawl.py
	$(PY) bench/align.py
	$(PY) bench/import.py --sizes 0.5,2
	$(PY) bench/extract.py
	$(PY) bench/train.py --threads 1
	$(PY) bench/stats.py
	$(PY) bench/zero_shot_synthetic.py

clean:
	rm -rf $(VENV) data *.egg-info .pytest_cache
