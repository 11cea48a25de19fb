# imgctl's own image, released by config/imgctl.yaml (context: this folder).
#
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v "$PWD:/work" -e DOCKERHUB_USERNAME -e DOCKERHUB_TOKEN imgctl/imgctl release --version 1.2.3
#
# imgctl runs as a non-root user: give it the Docker socket's group (--group-add above) or a
# DOCKER_HOST it may reach.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# git: the version and revision come from `git describe` / `git rev-parse` when no --version or
# CI tag gives them; the mounted repository belongs to another user, hence safe.directory.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
RUN useradd --create-home --uid 10001 --user-group imgctl
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["imgctl"]
CMD ["--help"]
