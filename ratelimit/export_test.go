package ratelimit

// PerTakeScripts makes r run one script per take, as it does on a Redis Cluster, so the
// tests can run that path on a single server.
func PerTakeScripts(r *Redis) { r.cluster = true }
