package jwks

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// DefaultSSMPrefix is the seed's parameter hierarchy.
const DefaultSSMPrefix = "/auth-service"

// SSMOptions say where the secrets live in AWS SSM Parameter Store.
type SSMOptions struct {
	// Prefix of the parameter names (default DefaultSSMPrefix): the secrets are
	// Prefix+"/jwt/private-key", Prefix+"/jwt/public-key" and
	// Prefix+"/encryption/fernet-key".
	Prefix string
	// Region; empty leaves it to the SDK (AWS_REGION, the shared config).
	Region string
	// EndpointURL overrides the SSM endpoint (a local fake, LocalStack). Empty
	// leaves it to the SDK, which honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_SSM.
	EndpointURL string
}

// Secrets are the values read from SSM; the caller feeds the key PEMs into a
// Source and the Fernet key to the MFA code.
type Secrets struct {
	PrivateKeyPEM []byte
	PublicKeyPEM  []byte
	FernetKey     []byte
}

// FetchSSM reads the three secrets in one GetParameters call, decrypting
// SecureString values. Credentials come from the SDK's default chain. A missing
// parameter is an error naming it: the seed requires all three.
func FetchSSM(ctx context.Context, o SSMOptions) (Secrets, error) {
	prefix := strings.TrimSuffix(o.Prefix, "/")
	if prefix == "" {
		prefix = DefaultSSMPrefix
	}
	names := struct{ priv, pub, fernet string }{
		prefix + "/jwt/private-key", prefix + "/jwt/public-key", prefix + "/encryption/fernet-key",
	}
	var opts []func(*config.LoadOptions) error
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return Secrets{}, fmt.Errorf("jwks: ssm: aws config: %w", err)
	}
	client := ssm.NewFromConfig(cfg, func(so *ssm.Options) {
		if o.EndpointURL != "" {
			so.BaseEndpoint = aws.String(o.EndpointURL)
		}
	})
	out, err := client.GetParameters(ctx, &ssm.GetParametersInput{
		Names:          []string{names.priv, names.pub, names.fernet},
		WithDecryption: aws.Bool(true),
	})
	if err != nil {
		return Secrets{}, fmt.Errorf("jwks: ssm: %w", err)
	}
	if len(out.InvalidParameters) > 0 {
		return Secrets{}, fmt.Errorf("jwks: ssm: parameters not found: %s", strings.Join(out.InvalidParameters, ", "))
	}
	values := make(map[string][]byte, len(out.Parameters))
	for _, p := range out.Parameters {
		values[aws.ToString(p.Name)] = []byte(aws.ToString(p.Value))
	}
	s := Secrets{PrivateKeyPEM: values[names.priv], PublicKeyPEM: values[names.pub], FernetKey: values[names.fernet]}
	for name, v := range map[string][]byte{names.priv: s.PrivateKeyPEM, names.pub: s.PublicKeyPEM, names.fernet: s.FernetKey} {
		if len(v) == 0 {
			return Secrets{}, fmt.Errorf("jwks: ssm: parameter %s is empty or missing", name)
		}
	}
	return s, nil
}
