package jwks_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// BenchmarkVerifyAccess compares, on the same RS256 (RSA-2048) token:
//
//   - bare: SHA-256 and crypto/rsa VerifyPKCS1v15 with a parsed key and a decoded
//     signature, the floor any verification pays;
//   - full: Manager.VerifyAccess, every check of DESIGN §4 included;
//   - jwt_parse: jwx's jwt.Parse with a pre-parsed key set, for reference.
//
// Each runs as its own sub-benchmark (time and allocations), and "ratio" runs all
// three interleaved in one loop, so that load from elsewhere on the machine falls
// on each alike: it reports full/bare (the target is at most 1.5) and
// jwt_parse/bare, and logs them.
func BenchmarkVerifyAccess(b *testing.B) {
	c := newClock()
	m, _, signer := dirManager(b, "RS256", c)
	tok := signAccess(b, m)
	pub := signer.Public().(*rsa.PublicKey)
	dot := strings.LastIndexByte(tok, '.')
	input := []byte(tok[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		b.Fatal(err)
	}
	bare := func(b *testing.B) {
		digest := sha256.Sum256(input)
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
	full := func(b *testing.B) {
		if _, err := m.VerifyAccess(tok); err != nil {
			b.Fatal(err)
		}
	}
	key, err := jwk.FromRaw(pub)
	if err != nil {
		b.Fatal(err)
	}
	hdr, _ := segments(b, tok)
	_ = key.Set(jwk.KeyIDKey, hdr["kid"])
	_ = key.Set(jwk.AlgorithmKey, jwa.RS256)
	set := jwk.NewSet()
	_ = set.AddKey(key)
	parse := func(b *testing.B) {
		if _, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithIssuer(testIssuer),
			jwt.WithAudience(testAudience), jwt.WithAcceptableSkew(30*time.Second),
			jwt.WithClock(jwt.ClockFunc(c.Now))); err != nil {
			b.Fatal(err)
		}
	}

	for _, bm := range []struct {
		name string
		fn   func(*testing.B)
	}{{"bare", bare}, {"full", full}, {"jwt_parse", parse}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bm.fn(b)
			}
		})
	}

	b.Run("ratio", func(b *testing.B) {
		var tBare, tFull, tParse time.Duration
		for i := 0; b.Loop(); i++ {
			// Alternate the order so that neither always runs with a warm cache.
			t1 := time.Now()
			if i%2 == 0 {
				bare(b)
			} else {
				full(b)
			}
			t2 := time.Now()
			if i%2 == 0 {
				full(b)
			} else {
				bare(b)
			}
			t3 := time.Now()
			parse(b)
			t4 := time.Now()
			if i%2 == 0 {
				tBare, tFull = tBare+t2.Sub(t1), tFull+t3.Sub(t2)
			} else {
				tFull, tBare = tFull+t2.Sub(t1), tBare+t3.Sub(t2)
			}
			tParse += t4.Sub(t3)
		}
		n := float64(b.N)
		b.ReportMetric(float64(tBare.Nanoseconds())/n, "bare-ns/op")
		b.ReportMetric(float64(tFull.Nanoseconds())/n, "full-ns/op")
		b.ReportMetric(float64(tFull)/float64(tBare), "full/bare")
		b.ReportMetric(float64(tParse)/float64(tBare), "jwt_parse/bare")
		if b.N > 1 {
			b.Logf("bare RSA verify %.1f µs, full verification %.1f µs: %.2fx (target <= 1.5x); jwt.Parse %.2fx",
				float64(tBare.Nanoseconds())/n/1e3, float64(tFull.Nanoseconds())/n/1e3,
				float64(tFull)/float64(tBare), float64(tParse)/float64(tBare))
		}
	})
}
