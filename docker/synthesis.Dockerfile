# GPU synthesis image: CUDA PyTorch from the official image, plus the project's synthesis extra.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app app
COPY synthesis synthesis
# torch is already in the base image and satisfies the extra's range, so nothing big is downloaded.
RUN pip install -e '.[synthesis]'
COPY demo demo
ENTRYPOINT ["metamers", "synth"]
