# The toolkit's CLIs on a CUDA PyTorch base image, with ffmpeg.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mmp
COPY setup.cfg pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY features ./features
COPY shards ./shards
COPY model ./model
# torch comes from the base image; everything else from setup.cfg's extras.
RUN pip install --no-cache-dir -e '.[all]'

ENV PYTHONUNBUFFERED=1
WORKDIR /data
CMD ["mmp-crawl", "--help"]
