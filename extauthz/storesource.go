package extauthz

import (
	"context"
	"errors"

	"github.com/authd/authd/store"
)

// StoreSource reads session state from the storage contract (store.Tx: a store.Store
// serves). It imports only the contract, never a backend.
type StoreSource struct {
	Store store.Tx
}

var _ SessionSource = StoreSource{}

// Session implements SessionSource.
func (s StoreSource) Session(ctx context.Context, sid string) (SessionInfo, error) {
	sess, err := s.Store.GetSession(ctx, sid)
	if errors.Is(err, store.ErrNotFound) {
		return SessionInfo{}, ErrNotFound
	}
	if err != nil {
		return SessionInfo{}, err
	}
	return SessionInfo{UserID: sess.UserID, ExpiresAt: sess.ExpiresAt, Revoked: sess.RevokedAt != nil}, nil
}

// Stamp implements SessionSource.
func (s StoreSource) Stamp(ctx context.Context, uid string) (string, error) {
	u, err := s.Store.GetUser(ctx, uid)
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", err
	}
	return u.SecurityStamp, nil
}
