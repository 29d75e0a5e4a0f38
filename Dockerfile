# A slim Python base plus the pinned torch wheel from requirements.txt. The official
# pytorch/pytorch images carry their own torch build; installing our pinned one on top would
# hold two copies. PyPI's Linux torch wheel brings the CUDA runtime with it, so the host needs
# only the NVIDIA driver and container toolkit.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp

# Dependencies first, in their own layer: code changes do not reinstall torch.
COPY requirements.txt /opt/requirements.txt
RUN pip install -r /opt/requirements.txt

RUN useradd --create-home --uid 1000 app \
    && mkdir -p /home/app/.cache/cvlization \
    && chown -R app:app /home/app
WORKDIR /workspace
COPY --chown=app:app . /workspace
USER app
ENV HOME=/home/app

CMD ["python", "train.py", "--help"]
