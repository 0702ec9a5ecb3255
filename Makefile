# Set-up and test entry points. Every target installs what it needs.
#   make sample   install, then convert the bundled sample photos into out/sample
#   make test     install (incl. the mxnet and DALI reference environments), then run the tests
PYTHON ?= python3
VENV := .venv
MX_VENV := .venv-mxnet
DALI_VENV := .venv-dali
# Extra pip flags (not PIP_*: pip reads those names from the environment, and make exports
# a variable given on its command line). `make test PIPFLAGS=-v` to see the installs.
PIPFLAGS ?= -q

.PHONY: install envs sample test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIPFLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIPFLAGS) -e .
	touch $@

# Test-only extras (pytest, moto's S3 server, Dask, Pillow) on top of the runtime.
$(VENV)/.test-installed: $(VENV)/.installed
	$(VENV)/bin/pip install $(PIPFLAGS) -e '.[test]'
	touch $@

# mxnet 1.9.1 is retired and pins numpy<1.24: it lives in its own environment,
# used only by the compatibility tests (as a subprocess), never by the job.
$(MX_VENV)/.installed:
	$(PYTHON) -m venv $(MX_VENV)
	$(MX_VENV)/bin/pip install $(PIPFLAGS) 'mxnet==1.9.1' 'numpy<1.24' 'opencv-python-headless<4.9'
	touch $@

# NVIDIA DALI's MXNet reader runs on the CPU (device_id=None): the second real reader.
$(DALI_VENV)/.installed:
	$(PYTHON) -m venv $(DALI_VENV)
	$(DALI_VENV)/bin/pip install $(PIPFLAGS) nvidia-dali-cuda120 numpy
	touch $@

install: $(VENV)/.installed

envs: $(MX_VENV)/.installed $(DALI_VENV)/.installed

sample: install
	$(VENV)/bin/python -m pipeline.run --input sample/photos --output out/sample --overwrite

test: $(VENV)/.test-installed envs
	$(VENV)/bin/python -m pytest -q tests

bench: install $(MX_VENV)/.installed
	$(VENV)/bin/pip install $(PIPFLAGS) -e '.[bench]'
	$(VENV)/bin/python bench/compare.py

clean:
	rm -rf $(VENV) $(MX_VENV) $(DALI_VENV) out
