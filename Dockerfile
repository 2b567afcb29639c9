# Reproduction image: CUDA PyTorch from the official image, this code, its run-time requirements.
#   docker build -t ocnet .
#   docker run --gpus all --ipc=host -v /data/cityscapes:/workspace/ocnet/data/cityscapes \
#       -v $PWD/pretrained_model:/workspace/ocnet/pretrained_model ocnet sh run_asp_oc.sh
# torch >= 2.10 is required (older releases let a crafted checkpoint run code under weights_only=True).
ARG BASE_IMAGE=pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHON=python

WORKDIR /workspace/ocnet

# The base image's torch satisfies requirements.txt, so pip keeps it and adds only the rest.
COPY requirements.txt ./
RUN python -m pip install -r requirements.txt

COPY . .

CMD ["sh", "run_asp_oc.sh"]
