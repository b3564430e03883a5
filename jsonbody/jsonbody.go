// Package jsonbody decodes JSON request bodies strictly, as DESIGN §3 requires.
//
// encoding/json alone is too forgiving for an authentication API: it turns invalid UTF-8
// into U+FFFD (so two different passwords could hash alike), keeps the last of duplicate
// keys, matches field names case-insensitively and ignores unknown fields. Decode refuses
// all of these before the struct is filled.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/authd/authd/problem"
)

// MaxBytes is the largest body Decode reads.
const MaxBytes = 64 << 10

// Decode reads r's body into dst, a pointer to a struct with json tags. An empty body
// decodes as {}. Errors are problem.Problem values: 400 invalid_json, 413
// payload_too_large or 422 validation_failed naming the field.
func Decode(r *http.Request, dst any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return problem.New(http.StatusRequestEntityTooLarge, "payload_too_large", "The request body is larger than 64 KiB.")
		}
		return invalid("The request body could not be read.")
	}
	return DecodeBytes(body, dst)
}

// DecodeBytes is Decode for a body already read.
func DecodeBytes(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if !utf8.Valid(body) || loneSurrogate(body) {
		return invalid("The body is not valid UTF-8.")
	}
	keys, err := scan(body)
	if err != nil {
		return err
	}
	allowed := fieldNames(dst)
	var unknown []problem.FieldError
	for _, k := range keys {
		if _, ok := allowed[k]; !ok {
			unknown = append(unknown, problem.FieldError{Field: k, Message: "unknown field"})
		}
	}
	if len(unknown) > 0 {
		return Invalid(unknown...)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Invalid(problem.FieldError{Field: te.Field, Message: "must be a " + typeName(te.Type)})
		}
		return invalid("The body is not valid JSON.")
	}
	return nil
}

// Invalid is the 422 validation_failed problem for the given field errors.
func Invalid(errs ...problem.FieldError) problem.Problem {
	names := make([]string, len(errs))
	for i, e := range errs {
		names[i] = e.Field
	}
	p := problem.New(http.StatusUnprocessableEntity, "validation_failed", "Invalid field(s): "+strings.Join(names, ", ")+".")
	p.Errors = errs
	return p
}

func invalid(detail string) problem.Problem {
	return problem.New(http.StatusBadRequest, "invalid_json", detail)
}

// scan checks that body is exactly one JSON object with no duplicate keys at any depth
// and nothing after it, and returns the object's top-level keys.
func scan(body []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid("The body is not valid JSON.")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, invalid("The body must be a JSON object.")
	}
	top, err := scanObject(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("The body has data after the JSON object.")
	}
	return top, nil
}

const maxDepth = 32

// scanObject reads an object's members after its '{' and returns its keys.
func scanObject(dec *json.Decoder, depth int) ([]string, error) {
	if depth > maxDepth {
		return nil, invalid("The body is nested too deeply.")
	}
	seen := map[string]struct{}{}
	var keys []string
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalid("The body is not valid JSON.")
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return keys, nil
		}
		k, ok := tok.(string)
		if !ok {
			return nil, invalid("The body is not valid JSON.")
		}
		if _, dup := seen[k]; dup {
			return nil, invalid(fmt.Sprintf("The key %q appears more than once.", truncate(k, 64)))
		}
		seen[k] = struct{}{}
		keys = append(keys, k)
		if err := scanValue(dec, depth); err != nil {
			return nil, err
		}
	}
}

func scanValue(dec *json.Decoder, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return invalid("The body is not valid JSON.")
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '{':
		_, err := scanObject(dec, depth+1)
		return err
	case '[':
		if depth+1 > maxDepth {
			return invalid("The body is nested too deeply.")
		}
		for dec.More() {
			if err := scanValue(dec, depth+1); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return invalid("The body is not valid JSON.")
		}
		return nil
	}
	return invalid("The body is not valid JSON.")
}

// loneSurrogate reports whether body escapes a UTF-16 surrogate that is not half of a
// pair (`"\ud800"`): encoding/json decodes it to U+FFFD, so two different passwords would
// hash alike. Escapes are read as JSON reads them; `\\u` is an escaped backslash.
func loneSurrogate(body []byte) bool {
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' || i+1 >= len(body) {
			continue
		}
		i++
		if body[i] != 'u' {
			continue
		}
		r, ok := hex4(body, i+1)
		if !ok {
			continue // malformed: the decoder refuses it
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 >= len(body) || body[i+1] != '\\' || body[i+2] != 'u' {
				return true
			}
			lo, ok := hex4(body, i+3)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 6
		}
	}
	return false
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// fieldNames returns the exact json names of dst's struct fields.
func fieldNames(dst any) map[string]struct{} {
	t := reflect.TypeOf(dst)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := map[string]struct{}{}
	if t.Kind() != reflect.Struct {
		return names
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names[name] = struct{}{}
	}
	return names
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "number"
	default:
		return t.Kind().String()
	}
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
