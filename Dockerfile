# The pvekvm app image: intake, workers, scheduler, operator CLI, producers and pvesim, installed
# from pyproject.toml into /opt/pvekvm. Settings come from the environment (DATABASE_URL,
# AMQP_URL, PVEKVM_NAMESPACE, PVE_CONNECTION_FILE, SMTP_HOST, SMTP_PORT, PVEKVM_SECRET_KEY_FILE)
# over /app/config/pvekvm.toml.
#   docker build -t pvekvm .                      # on a machine with registry access
#   scripts/containers images                     # here: FROM the locally built Python image
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
WORKDIR /app
RUN python3 -m venv /opt/pvekvm
ENV PATH=/opt/pvekvm/bin:$PATH PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies first (their own layer: a source change does not download them again).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      >/tmp/requirements.txt \
    && pip install --no-cache-dir -q -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY schema.sql ./
COPY config ./config
COPY pvekvm ./pvekvm
COPY workers ./workers
COPY steps ./steps
COPY producers ./producers
COPY pvesim ./pvesim
# Editable: pvekvm.config finds config/ (mail templates, default settings) beside the packages.
RUN pip install --no-cache-dir -q --no-deps -e . \
    && mkdir -p /var/lib/pvekvm
ENV PVEKVM_CONFIG=/app/config/pvekvm.toml PVEKVM_SECRET_KEY_FILE=/var/lib/pvekvm/secret.key
CMD ["python", "-m", "workers", "--pools", "all"]
