# The two commands of the README are `make run` and `make test`; everything else is a building block.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help:
	@echo "make run        bring up the whole stack (Slurm, database, Prefect, served flows, Django)"
	@echo "make test       install what is missing, start the services the tests need, run the suite"
	@echo "make test-fast  the suite without Slurm and without a Prefect server (PostgreSQL only), about 90 s"
	@echo "make down       stop what make run / make test left running (by recorded pid)"
	@echo "make test-cases every deployment's end-to-end test cases, against make run's stack (ARGS='assembly --case NAME')"
	@echo "make lint       uv lock --check, ruff, mypy (the whole project), shellcheck over scripts/"
	@echo "make slurm-up | slurm-down | slurm-status   the single-node Slurm cluster"

install:
	bash scripts/bootstrap.sh

run:
	bash scripts/run_stack.sh

test:
	bash scripts/test.sh

test-fast: install
	bash scripts/ensure_postgres.sh
	. scripts/env.sh && .venv/bin/pytest -m "not e2e and not slurm and not prefect_server" -q

down:
	bash scripts/down.sh

test-cases:
	. scripts/env.sh && DATABASE_URL=$${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/emgapi_dev} \
	  .venv/bin/python manage.py run_test_cases $(ARGS)

slurm-up:
	bash scripts/slurm.sh up

slurm-down:
	bash scripts/slurm.sh down

slurm-status:
	bash scripts/slurm.sh status

lint: install
	bash scripts/lint.sh

.PHONY: help install run test test-fast test-cases down slurm-up slurm-down slurm-status lint
