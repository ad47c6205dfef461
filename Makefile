# jukics: two set-up commands (see README.md)
#   make lab   build the local lab (podman), provision it with the playbooks, run the demo
#   make test  lint, pytest and every molecule scenario; ends with "N passed, N failed"
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup image lab lab-down test lint pytest molecule bench appliance-image test-image

help:
	@echo "make lab    build and provision the local lab, then run the end-to-end demo"
	@echo "make test   everything: lint, pytest, molecule (as CI runs it)"
	@echo "make lab-down   remove the lab containers and networks"
	@echo "make appliance-image   build the appliance image (raw, qcow2, OCI, manifest) into out/image/"
	@echo "make test-image   boot the appliance image under QEMU with swtpm (release CI stage)"

setup:
	@bash scripts/bootstrap.sh

image: setup
	@bash scripts/build-base-image.sh

lab: image
	@bash scripts/lab.sh up

lab-down:
	@bash scripts/lab.sh down

test: image
	@bash scripts/run-tests.sh

# Pieces of `make test`, for development.
lint: setup
	@PATH=$(CURDIR)/.venv/bin:$$PATH ruff check . && PATH=$(CURDIR)/.venv/bin:$$PATH yamllint --strict . \
	  && PATH=$(CURDIR)/.venv/bin:$$PATH ansible-lint --profile production roles playbooks molecule

pytest: setup
	@PYTHONPATH=app .venv/bin/pytest -q

molecule: image
	@for s in $$(ls molecule | grep -v -e shared -e ORDER); do .venv/bin/molecule test -s $$s || exit 1; done

bench: setup
	@for b in bench/*.sh bench/*.py; do [ -e "$$b" ] && echo "== $$b" && PYTHONPATH=app PATH=$(CURDIR)/.venv/bin:$$PATH $$([[ $$b == *.py ]] && echo python || echo bash) $$b; done

# The appliance image (docs/image.md). `make image` stays the podman base image of lab and molecule.
appliance-image: setup
	@bash scripts/bootstrap-image.sh
	@bash scripts/build-appliance-image.sh

# Release CI stage, not part of `make test`: boot the qcow2 under QEMU with swtpm (docs/image.md).
test-image: setup
	@bash scripts/bootstrap-image.sh
	@PATH=$(CURDIR)/.venv/bin:$$PATH PYTHONPATH=app python -m jukics.image.release verify $${JUKICS_IMAGE_OUT:-out/image}
	@PATH=$(CURDIR)/.venv/bin:$$PATH PYTHONPATH=app python -m jukics.image.boottest
	@PATH=$(CURDIR)/.venv/bin:$$PATH PYTHONPATH=app python -m jukics.image.ocicheck
