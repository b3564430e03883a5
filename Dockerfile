# syntax=docker/dockerfile:1
# Multi-stage build: a static authd binary on a distroless base, running as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/authd ./cmd/authd \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/authd /usr/local/bin/authd
# DATA_DIR: dev keys and the SQLite file when nothing else is configured; owned by nonroot so
# a named volume mounted here is writable.
COPY --from=build --chown=nonroot:nonroot /out/data /home/nonroot/data
USER nonroot:nonroot
WORKDIR /home/nonroot
ENV DATA_DIR=/home/nonroot/data
EXPOSE 8000 9001
ENTRYPOINT ["/usr/local/bin/authd"]
CMD ["serve"]
