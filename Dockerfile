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
# torch comes from the base image; everything else from setup.cfg's extras, including the deno
# binary yt-dlp runs for YouTube's JS challenges (the PyPI package `deno`) and the bgutil
# PO-token plugin (its provider server runs elsewhere: point the crawl at it with
# --extractor-args youtubepot-bgutilhttp:base_url=http://HOST:4416).
RUN pip install --no-cache-dir -e '.[all]' \
 && deno --version \
 && python -c "from pipeline.crawl.ytdlp_env import find_js_runtime as f; r = f(); assert r and r.accepted, r"

# deno checks for its own updates over the network unless told not to.
ENV PYTHONUNBUFFERED=1 DENO_NO_UPDATE_CHECK=1
WORKDIR /data
CMD ["mmp-crawl", "--help"]
