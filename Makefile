# The two commands of the README are `make run` and `make test`; everything else is a building block.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help:
	@echo "make run     bring up the whole stack (Slurm, database, Prefect, served flows, Django)"
	@echo "make test    install what is missing, start the services the tests need, run the suite"
	@echo "make slurm-up | slurm-down | slurm-status   the single-node Slurm cluster"
	@echo "make lint    ruff"

install:
	bash scripts/bootstrap.sh

run:
	bash scripts/run_stack.sh

test:
	bash scripts/test.sh

slurm-up:
	bash scripts/slurm.sh up

slurm-down:
	bash scripts/slurm.sh down

slurm-status:
	bash scripts/slurm.sh status

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

.PHONY: help install run test slurm-up slurm-down slurm-status lint
