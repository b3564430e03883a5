package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaultsServeTheEmbeddedStore(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "sqlite://./data/authd.db" || c.RedisURL != "" || c.HTTPAddr != ":8000" || c.GRPCAddr != ":9001" {
		t.Fatalf("defaults: %+v", c)
	}
	if !c.AutoMigrate || c.AccessTokenTTL != 15*time.Minute || c.DBMaxConns != 15 || c.PasswordMinLength != 15 {
		t.Fatalf("defaults: %+v", c)
	}
	if c.CheckLease != 64 {
		t.Fatalf("RATE_LIMIT_CHECK_LEASE default %d, want 64", c.CheckLease)
	}
	if want := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}; len(c.LockoutDurations) != 4 || c.LockoutDurations[3] != want[3] {
		t.Fatalf("lockout durations %v", c.LockoutDurations)
	}
}

func TestEachBadValueIsNamed(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad database URL", map[string]string{"DATABASE_URL": "mysql://x"}, "DATABASE_URL:"},
		{"database URL without host", map[string]string{"DATABASE_URL": "postgres:///db"}, "DATABASE_URL:"},
		{"in-memory SQLite, which the store refuses", map[string]string{"DATABASE_URL": "sqlite://:memory:"}, "DATABASE_URL:"},
		{"unparsable duration", map[string]string{"ACCESS_TOKEN_TTL": "fifteen"}, "ACCESS_TOKEN_TTL:"},
		{"negative duration", map[string]string{"SHUTDOWN_TIMEOUT": "-1s"}, "SHUTDOWN_TIMEOUT:"},
		{"bad bool", map[string]string{"DEBUG": "yes please"}, "DEBUG:"},
		{"bad alg", map[string]string{"JWT_ALG": "HS256"}, "JWT_ALG:"},
		{"bad redis URL", map[string]string{"REDIS_URL": "http://x"}, "REDIS_URL:"},
		{"password min length below 8", map[string]string{"PASSWORD_MIN_LENGTH": "6"}, "PASSWORD_MIN_LENGTH:"},
		{"bad lockout list", map[string]string{"LOCKOUT_DURATIONS": "1m,soon"}, "LOCKOUT_DURATIONS:"},
		{"bad port", map[string]string{"HTTP_ADDR": "localhost"}, "HTTP_ADDR:"},
		{"missing secret file", map[string]string{"FERNET_KEY_FILE": "/nonexistent/fernet"}, "FERNET_KEY_FILE:"},
		{"secret and file", map[string]string{"FERNET_KEY": "a", "FERNET_KEY_FILE": "/x"}, "FERNET_KEY:"},
		{"check lease of zero", map[string]string{"RATE_LIMIT_CHECK_LEASE": "0"}, "RATE_LIMIT_CHECK_LEASE:"},
		{"check trusted proxies trusting everyone", map[string]string{"CHECK_TRUSTED_PROXIES": "0.0.0.0/0"}, "CHECK_TRUSTED_PROXIES:"},
		{"check lease not a number", map[string]string{"RATE_LIMIT_CHECK_LEASE": "many"}, "RATE_LIMIT_CHECK_LEASE:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env))
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.HasPrefix(ce.Problems[0], tt.want) {
				t.Fatalf("got %v, want one problem starting %q", err, tt.want)
			}
		})
	}
}

func TestProductionRefusesDevConveniences(t *testing.T) {
	_, err := Load(env(map[string]string{"ENV": "production"}))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	got := strings.Join(ce.Problems, "\n")
	for _, v := range []string{"DATABASE_URL:", "REDIS_URL:", "JWT_PRIVATE_KEY:", "FERNET_KEY:"} {
		if !strings.Contains(got, v) {
			t.Errorf("production without %s accepted:\n%s", v, got)
		}
	}
	c, err := Load(env(map[string]string{
		"ENV": "production", "DATABASE_URL": "postgres://u:secret@db:5432/authd", "REDIS_URL": "redis://r:6379/0",
		"JWT_KEYS_DIR": "/keys", "FERNET_KEY": "k",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AutoMigrate {
		t.Error("AUTO_MIGRATE defaults to true in production")
	}
}

// What the config accepts, the store opens: a SQLite path may hold a space.
func TestSQLitePathsAreTakenLiterally(t *testing.T) {
	c, err := Load(env(map[string]string{"DATABASE_URL": "sqlite://./my data/authd.db"}))
	if err != nil || c.DatabaseURL != "sqlite://./my data/authd.db" {
		t.Fatalf("got %q, %v", c.DatabaseURL, err)
	}
}

func TestProblemsNeverRepeatTheDatabasePassword(t *testing.T) {
	_, err := Load(env(map[string]string{"DATABASE_URL": "postgres://u:hunter2@/db"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v", err)
	}
}

func TestSecretsComeFromFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fernet")
	if err := os.WriteFile(p, []byte("the-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(env(map[string]string{"FERNET_KEY_FILE": p}))
	if err != nil || string(c.FernetKey) != "the-key" {
		t.Fatalf("got %q, %v", c.FernetKey, err)
	}
}

func TestDotEnvFillsOnlyWhatTheEnvironmentLacks(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".env")
	content := "# comment\nexport AUTHD_TEST_A=\"from file\"\nAUTHD_TEST_B='b'\n\nAUTHD_TEST_C=c\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUTHD_TEST_C", "from env")
	get, err := Getenv(p)
	if err != nil {
		t.Fatal(err)
	}
	if get("AUTHD_TEST_A") != "from file" || get("AUTHD_TEST_B") != "b" || get("AUTHD_TEST_C") != "from env" {
		t.Fatalf("A=%q B=%q C=%q", get("AUTHD_TEST_A"), get("AUTHD_TEST_B"), get("AUTHD_TEST_C"))
	}
	if err := os.WriteFile(p, []byte("no equals sign\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Getenv(p); err == nil {
		t.Fatal("malformed .env accepted")
	}
}
