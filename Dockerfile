# One image for every place the job runs, with the same Beam and Python as the launcher:
#
#   Flink / Spark worker-pool sidecar:  docker run IMAGE --worker_pool        (listens on 50000)
#   Dataflow worker:                    --sdk_container_image=IMAGE --sdk_location=container
#   a scheduled batch job:              docker run IMAGE python -m pipeline.run --input s3://... --output s3://...
#
# Build from the project folder:  docker build -t imgrec-beam:0.1.0 .
FROM apache/beam_python3.11_sdk:2.77.0

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what setup.py installs; .dockerignore keeps environments, tests and data out.
WORKDIR /opt/imgrec
COPY setup.py ./
COPY imgrec/ imgrec/
COPY pipeline/ pipeline/
COPY transforms/ transforms/

# apache-beam is already in the base image at the version setup.py pins, so pip keeps
# it and adds the rest (OpenCV headless, boto3, smart_open, PyYAML). The import check
# fails the build if a runtime dependency is missing.
RUN pip install --no-cache-dir /opt/imgrec \
    && python -c "import apache_beam, cv2, boto3, smart_open, yaml, pipeline.run, transforms.write_shards"

WORKDIR /work
EXPOSE 50000

# Flags (or nothing) go to Beam's boot program, which every runner starts the
# container with: `--worker_pool`, or the Dataflow / DOCKER-environment flags.
# Anything else is a command, run as it is: `python -m pipeline.run ...`.
ENTRYPOINT ["/bin/sh", "-c", "case \"$1\" in ''|-*) exec /opt/apache/beam/boot \"$@\" ;; *) exec \"$@\" ;; esac", "imgrec-entrypoint"]
