# Two commands on a fresh machine: `make demo` (install, train and evaluate the digits demo)
# and `make test` (install, run the test suite). Both share one virtual environment.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG := configs/demo/twins-pcpvt-tiny_1xb64_digits.py
DEMO_WORK_DIR := work_dirs/demo

.PHONY: install demo test test-slow lint export-check

install: $(VENV)/.installed

$(VENV)/.installed: tools/install.sh setup.py requirements/*.txt
	VENV=$(VENV) bash tools/install.sh
	touch $@

demo: install
	$(PY) tools/dataset_converters/digits_to_imagenet.py data/digits
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR) --resume
	$(PY) tools/test.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK_DIR)/last_checkpoint)" --work-dir $(DEMO_WORK_DIR)

test: install
	$(PY) -m pytest tests -m "not slow"

# Tests too slow for the 15-minute CI budget (documented in README.md).
test-slow: install
	$(PY) -m pytest tests -m slow

# ruff (ruff.toml): pycodestyle, pyflakes and import order; CI runs it.
lint: install
	$(VENV)/bin/ruff check .

# Export every model of the index to ONNX and verify it (hours on 2 cores; resumable):
# writes tools/deployment/export_check.json, the source of the README's export results.
export-check: install
	$(PY) tools/deployment/export_check.py
