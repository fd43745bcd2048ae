# Short names for humans; each one runs tasks.py, which sets up .venv when needed.
.PHONY: dev test lint
dev:
	python3 tasks.py dev
test:
	python3 tasks.py test
lint:
	python3 tasks.py lint
