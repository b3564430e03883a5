package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/authd/authd/jwks"
)

// keysCmd runs `authd keys generate [--dir D] [--alg A] [--bits N]`.
func keysCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "generate" {
		return usageError{"keys needs: generate [--dir D] [--alg RS256|PS256|ES256|EdDSA] [--bits 2048|3072|4096]"}
	}
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "./keys", "directory for the key pair (JWT_KEYS_DIR)")
	alg := fs.String("alg", "RS256", "RS256, PS256, ES256 or EdDSA")
	bits := fs.Int("bits", 2048, "RSA key size: 2048, 3072 or 4096")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{"keys generate: " + err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("keys generate: unexpected argument %q", fs.Arg(0))}
	}
	switch *bits {
	case 2048, 3072, 4096:
	default:
		return usageError{fmt.Sprintf("keys generate: --bits %d is not 2048, 3072 or 4096", *bits)}
	}
	priv, pub, err := jwks.GenerateKeyPair(*dir, *alg, *bits, time.Now())
	if err != nil {
		return usageError{"keys generate: " + err.Error()}
	}
	fmt.Fprintf(stdout, "private key: %s\npublic key:  %s\n", priv, pub)
	return nil
}
