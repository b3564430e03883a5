package main

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/config"
)

func TestRedisURLChoosesServerClusterOrSentinel(t *testing.T) {
	single, err := openRedis("redis://127.0.0.1:6379/2", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	if c, ok := single.(*redis.Client); !ok || c.Options().DB != 2 {
		t.Fatalf("single server: %T", single)
	}

	cluster, err := openRedis("redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if c, ok := cluster.(*redis.ClusterClient); !ok || len(c.Options().Addrs) != 3 {
		t.Fatalf("cluster: %T", cluster)
	}

	sentinel, err := openRedis("redis://10.0.0.1:26379?master_name=mymaster&addr=10.0.0.2:26379", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	sentinel.Close()

	var ce *config.Error
	if _, err := openRedis("redis://127.0.0.1:6379?no_such_option=1", time.Second); !errors.As(err, &ce) {
		t.Fatalf("unknown option: %v, want a configuration error", err)
	}
}
