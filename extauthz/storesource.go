package extauthz

import (
	"context"

	"github.com/authd/authd/store"
)

// StoreSource reads session state from the storage contract (store.Tx: a store.Store
// serves). It imports only the contract, never a backend.
type StoreSource struct {
	Store store.Tx
}

var _ SessionSource = StoreSource{}

// State implements SessionSource with one store.Tx.CheckState read.
func (s StoreSource) State(ctx context.Context, sid, uid string) (SessionInfo, StampInfo, error) {
	cs, err := s.Store.CheckState(ctx, sid, uid)
	if err != nil {
		return SessionInfo{}, StampInfo{}, err
	}
	return SessionInfo{Found: cs.SessionFound, UserID: cs.SessionUserID, ExpiresAt: cs.SessionExpiresAt, Revoked: cs.SessionRevoked},
		StampInfo{Found: cs.UserFound, Stamp: cs.SecurityStamp}, nil
}
