package jwks_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authd/authd/jwks"
)

// fakeSSM speaks the AWS JSON 1.1 protocol of AmazonSSM.GetParameters, the one
// call FetchSSM makes, over a map of parameters.
func fakeSSM(t *testing.T, params map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if target := r.Header.Get("X-Amz-Target"); target != "AmazonSSM.GetParameters" {
			t.Errorf("X-Amz-Target %q", target)
			http.Error(w, `{"__type":"UnknownOperationException"}`, http.StatusBadRequest)
			return
		}
		if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
			t.Errorf("request not signed with SigV4: %q", r.Header.Get("Authorization"))
		}
		var in struct {
			Names          []string
			WithDecryption bool
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			t.Errorf("request body: %v", err)
		}
		if !in.WithDecryption {
			t.Error("SecureString parameters requested without decryption")
		}
		type parameter struct {
			Name, Type, Value string
			Version           int
		}
		out := struct {
			Parameters        []parameter
			InvalidParameters []string
		}{Parameters: []parameter{}, InvalidParameters: []string{}}
		for _, n := range in.Names {
			if v, ok := params[n]; ok {
				out.Parameters = append(out.Parameters, parameter{Name: n, Type: "SecureString", Value: v, Version: 1})
			} else {
				out.InvalidParameters = append(out.InvalidParameters, n)
			}
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// awsTestEnv gives the SDK static credentials and nothing else from the machine.
func awsTestEnv(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIDTEST",
		"AWS_SECRET_ACCESS_KEY":       "secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_SSM":        "",
	} {
		t.Setenv(k, v)
	}
}

func TestFetchSSMLoadsAllThreeSecrets(t *testing.T) {
	awsTestEnv(t)
	dir := t.TempDir()
	priv, pub := keyPair(t, dir, "RS256", t0)
	fernet := "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
	params := func(prefix string) map[string]string {
		return map[string]string{
			prefix + "/jwt/private-key":       string(readFile(t, priv)),
			prefix + "/jwt/public-key":        string(readFile(t, pub)),
			prefix + "/encryption/fernet-key": fernet,
		}
	}

	t.Run("endpoint from the options, the seed's names", func(t *testing.T) {
		srv := fakeSSM(t, params("/auth-service"))
		s, err := jwks.FetchSSM(context.Background(), jwks.SSMOptions{Region: "eu-west-1", EndpointURL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		if string(s.FernetKey) != fernet || string(s.PrivateKeyPEM) != string(readFile(t, priv)) ||
			string(s.PublicKeyPEM) != string(readFile(t, pub)) {
			t.Fatalf("secrets %q", s)
		}
		m := newManager(t, jwks.Source{PrivatePEM: s.PrivateKeyPEM, PublicPEM: s.PublicKeyPEM}, "RS256", nil)
		if _, err := m.VerifyAccess(signAccess(t, m)); err != nil {
			t.Error(err)
		}
	})

	t.Run("AWS_ENDPOINT_URL honoured, a configured prefix", func(t *testing.T) {
		srv := fakeSSM(t, params("/staging/auth"))
		t.Setenv("AWS_ENDPOINT_URL", srv.URL)
		t.Setenv("AWS_REGION", "eu-west-1")
		s, err := jwks.FetchSSM(context.Background(), jwks.SSMOptions{Prefix: "/staging/auth/"})
		if err != nil {
			t.Fatal(err)
		}
		if string(s.FernetKey) != fernet {
			t.Errorf("Fernet key %q", s.FernetKey)
		}
	})

	t.Run("a missing parameter is named", func(t *testing.T) {
		p := params("/auth-service")
		delete(p, "/auth-service/encryption/fernet-key")
		srv := fakeSSM(t, p)
		_, err := jwks.FetchSSM(context.Background(), jwks.SSMOptions{Region: "eu-west-1", EndpointURL: srv.URL})
		if err == nil || !strings.Contains(err.Error(), "/auth-service/encryption/fernet-key") {
			t.Errorf("FetchSSM = %v, want an error naming the missing parameter", err)
		}
	})
}
