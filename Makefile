# mmdaq: the two set-up commands of the README are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q

.PHONY: install demo demo-video test data clean help

help:
	@echo "make demo        install into $(VENV), then train on the synthetic shapes and print mAP"
	@echo "make test        install into $(VENV), then run the test suite"
	@echo "make demo-video  install, then train TSN on the synthetic clips and print top-1"
	@echo "make install     only install (idempotent; mmcv wheel cached in ~/.cache/mmdaq)"
	@echo "make data        only generate the synthetic datasets under data/"

install:
	bash tools/install.sh

demo: install
	$(PY) tools/demo.py detection

demo-video: install
	$(PY) tools/demo.py video

data: install
	$(PY) tools/data/generate_synthetic.py detection --out data/synthetic_shapes
	$(PY) tools/data/generate_synthetic.py video --out data/synthetic_clips

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf build work_dirs .pytest_cache mmdaq/_ext*.so
