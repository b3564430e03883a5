package password

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// cheap are parameters fast enough for tests; only TestDefaultParamsEndToEnd and the
// benchmarks pay for the defaults.
var cheap = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func newTestHasher(t testing.TB, opts Options) *Hasher {
	t.Helper()
	if opts.Params == (Params{}) {
		opts.Params = cheap
	}
	h, err := NewHasher(opts)
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	return h
}

// Vectors made with argon2-cffi 21.1.0 (Debian's python3-argon2) from the NFKC form of the
// password:
//
//	argon2.low_level.hash_secret(pw, salt, time_cost=t, memory_cost=m, parallelism=p,
//	                             hash_len=n, type=Type.ID)
//	argon2.PasswordHasher(time_cost=t, memory_cost=m, parallelism=p, hash_len=32, salt_len=16).hash(pw)
const (
	horse = "correct horse battery staple"
	// Default parameters, salt "somesaltsomesalt".
	cffiDefault = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$mtB7vZKFuEQDVzeZe5lTtf3BPC1e5BL1UKy7IW/SpV0"
	// m=1024, t=1, p=1, salt "saltsalt" (8 bytes), 16-byte tag.
	cffiShort = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$RbBgv82QPmmQFPlkOdp/7w"
	// PasswordHasher with m=2048, t=2, p=2, random salt.
	cffiRandomSalt = "$argon2id$v=19$m=2048,t=2,p=2$YyiTnOI4fzwVNpT3shOpQQ$lM/hHOCm9jCwpO766Eo6J67kKN+AN4tAdbAO+c7xh7U"
	// m=4096, t=2, p=2, salt "0123456789abcdef", password "Ångström-pässwörd-naïve-ﬁ"
	// normalised to NFKC (so the ligature hashed as "fi").
	cffiUnicode = "$argon2id$v=19$m=4096,t=2,p=2$MDEyMzQ1Njc4OWFiY2RlZg$+DrFepCnBFB6wtHrIPYKfckI+vIxQa4I2i9l0kBe5y4"
)

// The Unicode password of cffiUnicode, spelled three ways.
const (
	unicodeNFC = "\u00c5ngstr\u00f6m-p\u00e4ssw\u00f6rd-na\u00efve-\ufb01"
	unicodeNFD = "A\u030angstro\u0308m-pa\u0308sswo\u0308rd-nai\u0308ve-\ufb01"
	unicodeFi  = "\u00c5ngstr\u00f6m-p\u00e4ssw\u00f6rd-na\u00efve-fi"
)

// TestDefaultParamsEndToEnd is the one test that pays for m=64 MiB, t=3, p=4.
func TestDefaultParamsEndToEnd(t *testing.T) {
	ctx := context.Background()
	// NewHasher reads 16 + 32 bytes for the dummy hash; the first Hash then gets the salt
	// argon2-cffi was given.
	h, err := NewHasher(Options{Rand: strings.NewReader(strings.Repeat("x", 48) + "somesaltsomesalt")})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Params(); got != DefaultParams() {
		t.Fatalf("Params() = %+v, want %+v", got, DefaultParams())
	}
	phc, err := h.Hash(ctx, horse)
	if err != nil {
		t.Fatal(err)
	}
	if phc != cffiDefault {
		t.Errorf("Hash with argon2-cffi's salt =\n%s\nwant (argon2-cffi)\n%s", phc, cffiDefault)
	}
	ok, rehash, err := h.Verify(ctx, horse, cffiDefault)
	if err != nil || !ok || rehash {
		t.Errorf("Verify(argon2-cffi default vector) = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	ok, _, err = h.Verify(ctx, horse+"!", cffiDefault)
	if err != nil || ok {
		t.Errorf("Verify(wrong password) = %v, %v; want false, nil", ok, err)
	}
}

func TestHashRoundTripsThroughVerify(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, Options{})
	for _, pw := range []string{horse, unicodeNFC, "", strings.Repeat("€", MaxLength)} {
		phc, err := h.Hash(ctx, pw)
		if err != nil {
			t.Fatalf("Hash: %v", err)
		}
		if !strings.HasPrefix(phc, "$argon2id$v=19$m=64,t=1,p=1$") {
			t.Errorf("Hash = %q, want the PHC form with the live parameters", phc)
		}
		stored, err := parsePHC(phc)
		if err != nil {
			t.Fatalf("parsePHC(Hash()): %v", err)
		}
		if len(stored.salt) != 16 || len(stored.key) != 32 {
			t.Errorf("salt %d bytes, tag %d bytes; want 16 and 32", len(stored.salt), len(stored.key))
		}
		ok, rehash, err := h.Verify(ctx, pw, phc)
		if err != nil || !ok || rehash {
			t.Errorf("Verify(right password) = %v, %v, %v; want true, false, nil", ok, rehash, err)
		}
		ok, _, err = h.Verify(ctx, pw+"x", phc)
		if err != nil || ok {
			t.Errorf("Verify(wrong password) = %v, %v; want false, nil", ok, err)
		}
	}
}

func TestHashUsesAFreshSaltEachTime(t *testing.T) {
	h := newTestHasher(t, Options{})
	a, _ := h.Hash(context.Background(), horse)
	b, _ := h.Hash(context.Background(), horse)
	if a == b {
		t.Errorf("two hashes of one password are equal: %s", a)
	}
}

func TestVerifyArgon2CFFIHashes(t *testing.T) {
	h := newTestHasher(t, Options{})
	tests := []struct {
		name, pw, phc string
		ok            bool
	}{
		{"short salt and tag", horse, cffiShort, true},
		{"short salt and tag, wrong password", "correct horse battery stapl", cffiShort, false},
		{"random salt", horse, cffiRandomSalt, true},
		{"random salt, wrong password", "Correct horse battery staple", cffiRandomSalt, false},
		{"unicode NFC spelling", unicodeNFC, cffiUnicode, true},
		{"unicode NFD spelling", unicodeNFD, cffiUnicode, true},
		{"unicode NFKC spelling", unicodeFi, cffiUnicode, true},
		{"unicode without accents", "Angstrom-passwords-naive-fi", cffiUnicode, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, err := h.Verify(context.Background(), tt.pw, tt.phc)
			if err != nil || ok != tt.ok {
				t.Fatalf("Verify = %v, %v; want %v, nil", ok, err, tt.ok)
			}
			if ok && !rehash {
				t.Errorf("needsRehash = false for a hash with other parameters than %+v", h.Params())
			}
		})
	}
}

func TestNFCAndNFDSpellingsVerifyAlike(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, Options{})
	if Normalize(unicodeNFC) != Normalize(unicodeNFD) {
		t.Fatal("Normalize differs for NFC and NFD spellings")
	}
	for _, tt := range []struct{ name, hashed, given string }{
		{"hash NFC, verify NFD", unicodeNFC, unicodeNFD},
		{"hash NFD, verify NFC", unicodeNFD, unicodeNFC},
		{"hash ligature, verify letters", unicodeNFC, unicodeFi},
		{"hash full-width, verify ASCII", "ｃｏｒｒｅｃｔ horse", "correct horse"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			phc, err := h.Hash(ctx, tt.hashed)
			if err != nil {
				t.Fatal(err)
			}
			if ok, _, err := h.Verify(ctx, tt.given, phc); err != nil || !ok {
				t.Errorf("Verify = %v, %v; want true", ok, err)
			}
		})
	}
}

func TestVerifyNeedsRehashWhenParamsDiffer(t *testing.T) {
	ctx := context.Background()
	current := newTestHasher(t, Options{})
	tests := []struct {
		name   string
		params Params
	}{
		{"memory", Params{Memory: 128, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}},
		{"time", Params{Memory: 64, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}},
		{"threads", Params{Memory: 64, Time: 1, Threads: 2, SaltLen: 16, KeyLen: 32}},
		{"salt length", Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 24, KeyLen: 32}},
		{"tag length", Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 16}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := newTestHasher(t, Options{Params: tt.params})
			phc, err := old.Hash(ctx, horse)
			if err != nil {
				t.Fatal(err)
			}
			ok, rehash, err := current.Verify(ctx, horse, phc)
			if err != nil || !ok || !rehash {
				t.Errorf("Verify(old params) = %v, %v, %v; want true, true, nil", ok, rehash, err)
			}
			if ok, rehash, _ := current.Verify(ctx, "wrong", phc); ok || rehash {
				t.Errorf("Verify(wrong password, old params) = %v, %v; want false, false", ok, rehash)
			}
			if _, rehash, _ := old.Verify(ctx, horse, phc); rehash {
				t.Error("needsRehash with the parameters the hash was made with")
			}
		})
	}
}

func TestVerifyRefusesMalformedOrAbsurdHashes(t *testing.T) {
	const (
		salt = "c2FsdHNhbHQ"
		tag  = "RbBgv82QPmmQFPlkOdp/7w"
	)
	good := "$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$" + tag
	tests := []struct{ name, phc string }{
		{"empty", ""},
		{"dollar", "$"},
		{"plain text", "hunter2"},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"},
		{"argon2i", "$argon2i$v=19$m=1024,t=1,p=1$" + salt + "$" + tag},
		{"argon2d", "$argon2d$v=19$m=1024,t=1,p=1$" + salt + "$" + tag},
		{"version 16", "$argon2id$v=16$m=1024,t=1,p=1$" + salt + "$" + tag},
		{"no version", "$argon2id$m=1024,t=1,p=1$" + salt + "$" + tag},
		{"missing tag", "$argon2id$v=19$m=1024,t=1,p=1$" + salt},
		{"extra field", good + "$"},
		{"no leading dollar", good[1:]},
		{"params out of order", "$argon2id$v=19$t=1,m=1024,p=1$" + salt + "$" + tag},
		{"missing p", "$argon2id$v=19$m=1024,t=1$" + salt + "$" + tag},
		{"extra param", "$argon2id$v=19$m=1024,t=1,p=1,keyid=1$" + salt + "$" + tag},
		{"leading zero", "$argon2id$v=19$m=01024,t=1,p=1$" + salt + "$" + tag},
		{"sign", "$argon2id$v=19$m=+1024,t=1,p=1$" + salt + "$" + tag},
		{"negative", "$argon2id$v=19$m=-1,t=1,p=1$" + salt + "$" + tag},
		{"empty number", "$argon2id$v=19$m=,t=1,p=1$" + salt + "$" + tag},
		{"over 32 bits", "$argon2id$v=19$m=4294967296,t=1,p=1$" + salt + "$" + tag},
		{"memory 4 GiB", "$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + tag},
		{"memory 2 GiB", "$argon2id$v=19$m=2097152,t=1,p=1$" + salt + "$" + tag},
		{"memory below 8p", "$argon2id$v=19$m=31,t=1,p=4$" + salt + "$" + tag},
		{"time 0", "$argon2id$v=19$m=1024,t=0,p=1$" + salt + "$" + tag},
		{"time huge", "$argon2id$v=19$m=1024,t=4294967295,p=1$" + salt + "$" + tag},
		{"too much work", "$argon2id$v=19$m=1048576,t=5,p=1$" + salt + "$" + tag},
		{"threads 0", "$argon2id$v=19$m=1024,t=1,p=0$" + salt + "$" + tag},
		{"threads 255", "$argon2id$v=19$m=4096,t=1,p=255$" + salt + "$" + tag},
		{"threads 256", "$argon2id$v=19$m=4096,t=1,p=256$" + salt + "$" + tag},
		{"salt not base64", "$argon2id$v=19$m=1024,t=1,p=1$!!!!!!!!!!!$" + tag},
		{"salt padded", "$argon2id$v=19$m=1024,t=1,p=1$" + salt + "=$" + tag},
		{"salt url alphabet", "$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$" + strings.ReplaceAll(tag, "/", "_")},
		{"salt non-canonical bits", "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHR$" + tag},
		{"salt too short", "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$" + tag},
		{"salt too long", "$argon2id$v=19$m=1024,t=1,p=1$" + strings.Repeat("A", 400) + "$" + tag},
		{"empty tag", "$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$"},
		{"tag too short", "$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$AAAA"},
		{"whitespace", good + " "},
		{"huge", "$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$" + strings.Repeat("A", 1<<20)},
	}
	h := newTestHasher(t, Options{})
	if ok, _, err := h.Verify(context.Background(), horse, good); err != nil || !ok {
		t.Fatalf("the well-formed base case does not verify: %v, %v", ok, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, err := h.Verify(context.Background(), horse, tt.phc)
			if !errors.Is(err, ErrMalformedHash) || ok || rehash {
				t.Errorf("Verify = %v, %v, %v; want false, false, ErrMalformedHash", ok, rehash, err)
			}
			if err != nil && strings.Contains(err.Error(), horse) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// FuzzParsePHC checks that no input makes the parser panic and that whatever it accepts is
// within the limits and encodes back to itself.
func FuzzParsePHC(f *testing.F) {
	for _, s := range []string{cffiDefault, cffiShort, cffiUnicode, "", "$argon2id$v=19$m=,t=,p=$$", "$$$$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePHC(s)
		if err != nil {
			return
		}
		if err := p.params.Validate(); err != nil {
			t.Fatalf("accepted out-of-range parameters: %v", err)
		}
		if got := encodePHC(p.params, p.salt, p.key); got != s {
			t.Fatalf("parse then encode = %q, want %q", got, s)
		}
	})
}

func TestHashRefusesWhatThePolicyRefuses(t *testing.T) {
	h := newTestHasher(t, Options{})
	tests := []struct {
		name string
		pw   string
		want error
	}{
		{"129 code points", strings.Repeat("a", MaxLength+1), ErrTooLong},
		{"over 128 after NFKC", strings.Repeat("\ufdfa", 8), ErrTooLong}, // each expands to 18
		{"over the byte cap", strings.Repeat("\u0301", maxInputBytes), ErrTooLong},
		{"invalid UTF-8", "correct horse\xff battery", ErrInvalidUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			phc, err := h.Hash(context.Background(), tt.pw)
			if !errors.Is(err, tt.want) || phc != "" {
				t.Errorf("Hash = %q, %v; want %v", phc, err, tt.want)
			}
			ok, _, err := h.Verify(context.Background(), tt.pw, h.dummy)
			if ok || err != nil {
				t.Errorf("Verify = %v, %v; want false, nil", ok, err)
			}
		})
	}
	if _, err := h.Hash(context.Background(), strings.Repeat("a", MaxLength)); err != nil {
		t.Errorf("Hash(128 code points) = %v, want nil", err)
	}
}

func TestVerifyDummyUsesLiveParamsAndNeverMatches(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newTestHasher(t, Options{Registerer: reg})
	stored, err := parsePHC(h.dummy)
	if err != nil {
		t.Fatalf("dummy hash does not parse: %v", err)
	}
	if stored.params != h.Params() {
		t.Errorf("dummy params %+v, want the live %+v", stored.params, h.Params())
	}
	for _, pw := range []string{"", horse, "x"} {
		if err := h.VerifyDummy(context.Background(), pw); err != nil {
			t.Errorf("VerifyDummy = %v", err)
		}
	}
	// It ran Argon2 each time, and shows in the metrics as an ordinary verify.
	if n := histogramCount(t, reg, "verify"); n != 3 {
		t.Errorf("verify observations = %d, want 3", n)
	}
}

func TestVerifyDummyWaitsForASlotLikeVerify(t *testing.T) {
	// A dummy verify runs Argon2 under the gate like a real one, so a full gate refuses it.
	h := newTestHasher(t, Options{MaxConcurrent: 1, MaxWait: time.Millisecond})
	hold(t, h)
	if err := h.VerifyDummy(context.Background(), horse); !errors.Is(err, ErrOverloaded) {
		t.Errorf("VerifyDummy on a full gate = %v, want ErrOverloaded", err)
	}
}

func TestNewHasherValidatesOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"memory below 8p", Options{Params: Params{Memory: 16, Threads: 4}}},
		{"memory over 1 GiB", Options{Params: Params{Memory: 2 << 20}}},
		{"threads over 64", Options{Params: Params{Threads: 65, Memory: 8 * 65}}},
		{"time over 64", Options{Params: Params{Time: 65, Memory: 64}}},
		{"salt under 16 bytes", Options{Params: Params{SaltLen: 8}}},
		{"tag under 16 bytes", Options{Params: Params{KeyLen: 8}}},
		{"negative MaxConcurrent", Options{MaxConcurrent: -1}},
		{"negative MaxWait", Options{MaxWait: -time.Second}},
		{"negative MaxQueue", Options{MaxQueue: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewHasher(tt.opts); err == nil {
				t.Error("NewHasher accepted it")
			}
		})
	}
	h, err := NewHasher(Options{Params: Params{Memory: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultParams()
	want.Memory = 1024
	if h.Params() != want {
		t.Errorf("zero fields: Params() = %+v, want %+v", h.Params(), want)
	}
	if h.MaxConcurrent() < 1 {
		t.Errorf("default MaxConcurrent = %d", h.MaxConcurrent())
	}
}

func TestNewHasherRefusesADuplicateRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	newTestHasher(t, Options{Registerer: reg})
	if _, err := NewHasher(Options{Params: cheap, Registerer: reg}); err == nil {
		t.Error("a second Hasher registered the same metrics")
	}
}

// hold takes the whole budget of h until the test ends.
func hold(t *testing.T, h *Hasher) {
	t.Helper()
	if err := h.gate.acquire(context.Background(), h.gate.size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.gate.release(h.gate.size) })
}

func waitQueued(t *testing.T, h *Hasher, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); h.gate.queued() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d, want %d", h.gate.queued(), n)
		}
	}
}

func TestSaturatedHasherReturnsErrOverloadedAfterMaxWait(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newTestHasher(t, Options{MaxConcurrent: 1, MaxWait: time.Millisecond, Registerer: reg})
	hold(t, h)
	if _, err := h.Hash(context.Background(), horse); !errors.Is(err, ErrOverloaded) {
		t.Errorf("Hash = %v, want ErrOverloaded", err)
	}
	if _, _, err := h.Verify(context.Background(), horse, cffiShort); !errors.Is(err, ErrOverloaded) {
		t.Errorf("Verify = %v, want ErrOverloaded", err)
	}
	if got := counterValue(t, reg, "authd_password_hash_overloaded_total"); got != 2 {
		t.Errorf("overloaded counter = %v, want 2", got)
	}
	if got := h.gate.queued(); got != 0 {
		t.Errorf("queue depth after giving up = %d, want 0", got)
	}
}

func TestFullQueueReturnsErrOverloadedAtOnce(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newTestHasher(t, Options{MaxConcurrent: 1, MaxQueue: 1, MaxWait: time.Minute, Registerer: reg})
	hold(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := h.Hash(ctx, horse); done <- err }()
	waitQueued(t, h, 1)
	if got := gaugeValue(t, reg, "authd_password_hash_queue_depth"); got != 1 {
		t.Errorf("queue depth gauge = %v, want 1", got)
	}
	start := time.Now()
	if _, err := h.Hash(context.Background(), horse); !errors.Is(err, ErrOverloaded) {
		t.Errorf("Hash with a full queue = %v, want ErrOverloaded", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("a full queue made the caller wait %s", d)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("queued Hash after cancel = %v, want context.Canceled", err)
	}
	if got := gaugeValue(t, reg, "authd_password_hash_queue_depth"); got != 0 {
		t.Errorf("queue depth gauge = %v, want 0", got)
	}
}

func TestBusyHasherQueuesCallersInsteadOfRefusing(t *testing.T) {
	h := newTestHasher(t, Options{MaxConcurrent: 1, MaxWait: time.Minute})
	if err := h.gate.acquire(context.Background(), h.gate.size); err != nil {
		t.Fatal(err)
	}
	const callers = 4
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			phc, err := h.Hash(context.Background(), horse)
			if err == nil {
				_, _, err = h.Verify(context.Background(), horse, phc)
			}
			errs <- err
		})
	}
	waitQueued(t, h, callers)
	h.gate.release(h.gate.size)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("queued caller: %v", err)
		}
	}
}

func TestHashRespectsContextCancellation(t *testing.T) {
	h := newTestHasher(t, Options{MaxConcurrent: 1, MaxWait: time.Minute})

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(cancelled, horse); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, _, err := h.Verify(cancelled, horse, cffiShort); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify(cancelled ctx) = %v, want context.Canceled", err)
	}

	hold(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.VerifyDummy(ctx, horse); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("VerifyDummy waiting past the deadline = %v, want context.DeadlineExceeded", err)
	}
}

func TestStoredHashWithMoreMemoryTakesALargerShare(t *testing.T) {
	// Budget 2 × 64 KiB. A stored hash with m=128 needs all of it, so it waits while one
	// live-parameter hash runs; without weights it would run beside it and overrun the budget.
	h := newTestHasher(t, Options{MaxConcurrent: 2, MaxWait: time.Minute})
	old := newTestHasher(t, Options{Params: Params{Memory: 128, Time: 1, Threads: 1}})
	phc, err := old.Hash(context.Background(), horse)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.gate.acquire(context.Background(), int64(cheap.Memory)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ok, _, err := h.Verify(context.Background(), horse, phc)
		if err == nil && !ok {
			err = errors.New("no match")
		}
		done <- err
	}()
	waitQueued(t, h, 1)
	h.gate.release(int64(cheap.Memory))
	if err := <-done; err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestHashDurationIsRecordedPerOperation(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newTestHasher(t, Options{Registerer: reg})
	phc, _ := h.Hash(context.Background(), horse)
	_, _, _ = h.Verify(context.Background(), horse, phc)
	_, _, _ = h.Verify(context.Background(), "wrong", phc)
	if n := histogramCount(t, reg, "hash"); n != 1 {
		t.Errorf("hash observations = %d, want 1", n)
	}
	if n := histogramCount(t, reg, "verify"); n != 2 {
		t.Errorf("verify observations = %d, want 2", n)
	}
}

func TestSaltReadFailureIsAnError(t *testing.T) {
	h := newTestHasher(t, Options{})
	h.rand = bytes.NewReader(nil)
	if _, err := h.Hash(context.Background(), horse); err == nil {
		t.Error("Hash without randomness succeeded")
	}
}

func family(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return family(t, reg, name).GetMetric()[0].GetCounter().GetValue()
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return family(t, reg, name).GetMetric()[0].GetGauge().GetValue()
}

func histogramCount(t *testing.T, reg *prometheus.Registry, op string) uint64 {
	for _, m := range family(t, reg, "authd_password_hash_duration_seconds").GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "op" && l.GetValue() == op {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func BenchmarkHashDefaultParams(b *testing.B) {
	h, err := NewHasher(Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.Hash(ctx, horse); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyDefaultParams(b *testing.B) {
	h, err := NewHasher(Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if ok, _, err := h.Verify(ctx, horse, cffiDefault); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkVerifyDummyDefaultParams(b *testing.B) {
	h, err := NewHasher(Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if err := h.VerifyDummy(ctx, horse); err != nil {
			b.Fatal(err)
		}
	}
}
