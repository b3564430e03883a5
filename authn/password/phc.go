package password

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// ErrMalformedHash means a stored hash is not an Argon2id PHC string this package can verify:
// bad syntax, another algorithm or version, or parameters outside the limits below. It never
// carries the hash itself.
var ErrMalformedHash = errors.New("password: malformed hash")

// Limits on parameters, for the live ones and for every stored hash that is verified. They
// keep a corrupted or hostile row from costing unbounded memory or time: the largest hash
// verified allocates 1 GiB and makes at most 4 GiB of memory passes.
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 64
	maxWorkKiB   = 1 << 22 // Memory × Time: 4 GiB of passes, about 20 times the defaults
	maxThreads   = 64
	minSaltLen   = 8 // RFC 9106 §3.1
	maxSaltLen   = 256
	minKeyLen    = 4 // RFC 9106 §3.1
	maxKeyLen    = 256
	maxPHCLen    = 1024
)

// Params are Argon2id parameters.
type Params struct {
	Memory  uint32 // m, in KiB
	Time    uint32 // t, passes over the memory
	Threads uint8  // p, lanes (parallelism)
	SaltLen uint32 // bytes of random salt per hash
	KeyLen  uint32 // bytes of tag (hash output)
}

// DefaultParams are RFC 9106's second recommended option: m=64 MiB, t=3, p=4, with a 16-byte
// salt and a 32-byte tag (argon2-cffi's defaults).
func DefaultParams() Params {
	return Params{Memory: 64 * 1024, Time: 3, Threads: 4, SaltLen: 16, KeyLen: 32}
}

// Validate reports whether p is within this package's limits (Argon2 itself needs
// Memory ≥ 8 × Threads).
func (p Params) Validate() error {
	switch {
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("argon2 parallelism %d is outside 1..%d", p.Threads, maxThreads)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemoryKiB:
		return fmt.Errorf("argon2 memory %d KiB is outside %d..%d", p.Memory, 8*uint32(p.Threads), maxMemoryKiB)
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("argon2 time %d is outside 1..%d", p.Time, maxTime)
	case uint64(p.Memory)*uint64(p.Time) > maxWorkKiB:
		return fmt.Errorf("argon2 memory × time %d KiB is over %d", uint64(p.Memory)*uint64(p.Time), maxWorkKiB)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("argon2 salt length %d is outside %d..%d", p.SaltLen, minSaltLen, maxSaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("argon2 tag length %d is outside %d..%d", p.KeyLen, minKeyLen, maxKeyLen)
	}
	return nil
}

// phc is a parsed hash. params.SaltLen and params.KeyLen are the lengths found in the string.
type phc struct {
	params Params
	salt   []byte
	key    []byte
}

// b64 is the PHC encoding: standard alphabet, no padding, canonical trailing bits (what
// argon2-cffi and the reference implementation write).
func b64() *base64.Encoding { return base64.RawStdEncoding.Strict() }

// encodePHC writes $argon2id$v=19$m=…,t=…,p=…$salt$tag.
func encodePHC(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64().EncodeToString(salt), b64().EncodeToString(key))
}

// parsePHC reads the form encodePHC writes, strictly: argon2id, v=19, m, t and p in that order
// in canonical decimal, unpadded base64. Anything else is ErrMalformedHash.
func parsePHC(s string) (phc, error) {
	malformed := func(what string) (phc, error) {
		return phc{}, fmt.Errorf("%w: %s", ErrMalformedHash, what)
	}
	if len(s) > maxPHCLen {
		return malformed("too long")
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return malformed("not a PHC string")
	}
	if parts[1] != "argon2id" {
		return malformed("algorithm is not argon2id")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return malformed("version is not 19")
	}
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return malformed("parameters are not m,t,p")
	}
	var vals [3]uint64
	for i, name := range [3]string{"m=", "t=", "p="} {
		digits, ok := strings.CutPrefix(fields[i], name)
		if !ok {
			return malformed("parameters are not m,t,p")
		}
		v, ok := parseDecimal(digits)
		if !ok {
			return malformed("parameter " + name[:1] + " is not a decimal number")
		}
		vals[i] = v
	}
	if vals[2] > maxThreads {
		return malformed("parameters out of range")
	}
	salt, err := b64().DecodeString(parts[4])
	if err != nil {
		return malformed("salt is not unpadded base64")
	}
	key, err := b64().DecodeString(parts[5])
	if err != nil {
		return malformed("tag is not unpadded base64")
	}
	p := Params{
		Memory:  uint32(vals[0]),
		Time:    uint32(vals[1]),
		Threads: uint8(vals[2]),
		SaltLen: uint32(len(salt)),
		KeyLen:  uint32(len(key)),
	}
	if err := p.Validate(); err != nil {
		return malformed("parameters out of range")
	}
	return phc{params: p, salt: salt, key: key}, nil
}

// parseDecimal accepts 1 to 10 ASCII digits without a sign or a leading zero, up to 2^32-1.
func parseDecimal(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return v, err == nil
}
