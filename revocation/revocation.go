// Package revocation carries session revocations and security-stamp rotations from the
// replica that made them to every replica's check-path cache (DESIGN §5 step 4).
//
// Messages go over the Redis channel authd:revocations as JSON, or through an in-process
// broadcast when Redis is not configured. Delivery is best effort: a subscriber that misses
// a message is saved by its cache TTL, so publishers log failures and carry on.
package revocation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Channel is the Redis pub/sub channel.
const Channel = "authd:revocations"

// Message types.
const (
	TypeSessionRevoked = "session_revoked"
	TypeStampRotated   = "stamp_rotated"
)

// Message is one revocation or rotation. SessionRevoked carries SID; StampRotated carries
// UID and the new Stamp.
type Message struct {
	Type  string `json:"type"`
	SID   string `json:"sid,omitempty"`
	UID   string `json:"uid,omitempty"`
	Stamp string `json:"stamp,omitempty"`
}

// SessionRevoked is the message for a revoked session.
func SessionRevoked(sid string) Message { return Message{Type: TypeSessionRevoked, SID: sid} }

// StampRotated is the message for a user's new security stamp.
func StampRotated(uid, stamp string) Message {
	return Message{Type: TypeStampRotated, UID: uid, Stamp: stamp}
}

// Bus publishes messages and delivers them to subscribers.
type Bus interface {
	Publish(ctx context.Context, msgs ...Message) error
	// Subscribe calls fn for every message until ctx ends. onState, when not nil, learns
	// each time the subscription is established (true) or lost (false), so a cache can
	// shorten its TTL while messages may be missed and drop what it may have missed.
	// Subscribe blocks until ctx ends.
	Subscribe(ctx context.Context, fn func(Message), onState func(connected bool))
}

// Memory is the in-process Bus for a single replica.
type Memory struct {
	mu   sync.RWMutex
	subs map[int]func(Message)
	next int
}

// NewMemory returns an in-process bus.
func NewMemory() *Memory { return &Memory{subs: map[int]func(Message){}} }

// Publish delivers msgs to every subscriber before it returns.
func (m *Memory) Publish(_ context.Context, msgs ...Message) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, msg := range msgs {
		for _, fn := range m.subs {
			fn(msg)
		}
	}
	return nil
}

// Subscribe registers fn until ctx ends.
func (m *Memory) Subscribe(ctx context.Context, fn func(Message), onState func(bool)) {
	m.mu.Lock()
	id := m.next
	m.next++
	m.subs[id] = fn
	m.mu.Unlock()
	if onState != nil {
		onState(true)
	}
	<-ctx.Done()
	m.mu.Lock()
	delete(m.subs, id)
	m.mu.Unlock()
}

// Redis is the Bus over Redis pub/sub.
type Redis struct {
	client  redis.UniversalClient
	channel string
	logger  *slog.Logger
}

// NewRedis returns a bus on channel (Channel when empty; tests use their own).
func NewRedis(client redis.UniversalClient, channel string, logger *slog.Logger) *Redis {
	if channel == "" {
		channel = Channel
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Redis{client: client, channel: channel, logger: logger}
}

// Publish sends each message; it returns the first error but tries them all.
func (r *Redis) Publish(ctx context.Context, msgs ...Message) error {
	var errs []error
	for _, msg := range msgs {
		b, err := json.Marshal(msg)
		if err != nil {
			return err
		}
		if err := r.client.Publish(ctx, r.channel, b).Err(); err != nil {
			errs = append(errs, fmt.Errorf("publish %s: %w", msg.Type, err))
		}
	}
	return errors.Join(errs...)
}

// Subscribe listens on the channel, re-subscribing after a lost connection with a short
// backoff, and reports connection state changes through onState.
func (r *Redis) Subscribe(ctx context.Context, fn func(Message), onState func(bool)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.listen(ctx, fn, onState)
		if ctx.Err() != nil {
			return
		}
		if onState != nil {
			onState(false)
		}
		r.logger.Warn("revocation subscription lost; retrying", "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (r *Redis) listen(ctx context.Context, fn func(Message), onState func(bool)) error {
	ps := r.client.Subscribe(ctx, r.channel)
	defer ps.Close()
	// ReceiveMessage does not watch ctx; closing the subscription is what ends it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	// Receive the subscription confirmation so "connected" means connected.
	if _, err := ps.Receive(ctx); err != nil {
		return err
	}
	if onState != nil {
		onState(true)
	}
	for {
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		var msg Message
		if err := json.Unmarshal([]byte(m.Payload), &msg); err != nil || msg.Type == "" {
			r.logger.Warn("ignoring malformed revocation message", "bytes", len(m.Payload))
			continue
		}
		fn(msg)
	}
}
