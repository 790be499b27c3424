package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// source is one read of the policies: parsed modules, their tests and the
// data document, with the revision id that names them.
type source struct {
	// modules serve requests; tests are the *_test.rego modules, compiled
	// only to run the tests.
	modules, tests map[string]*ast.Module
	data           map[string]any
	// id is a short sha256 of every module and data file (path and
	// content), or of the bundle file.
	id    string
	files int
	where string
}

// isDataFile reports whether name is a data document: data.json,
// data.yaml or data.yml, as OPA's loader names them. Other JSON and YAML
// files (examples, fixtures) are not loaded.
func isDataFile(name string) bool {
	return name == "data.json" || name == "data.yaml" || name == "data.yml"
}

// isTestModule reports whether a module path names a test module.
func isTestModule(path string) bool { return strings.HasSuffix(path, "_test.rego") }

// listDir returns the policy files under dir (relative, slash-separated,
// sorted): *.rego and data files, skipping hidden directories.
func listDir(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != dir && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".rego") || isDataFile(name) {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

// fingerprint summarises what the watcher compares: each policy file's
// path, size and modification time (or the bundle's).
func fingerprint(dir, bundlePath string) (string, error) {
	var b strings.Builder
	if bundlePath != "" {
		fi, err := os.Stat(bundlePath)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d/%d", fi.Size(), fi.ModTime().UnixNano())
		return b.String(), nil
	}
	files, err := listDir(dir)
	if err != nil {
		return "", err
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return "", err
		}
		b.WriteString(f)
		b.WriteByte(0)
		b.WriteString(strconv.FormatInt(fi.Size(), 10))
		b.WriteByte('/')
		b.WriteString(strconv.FormatInt(fi.ModTime().UnixNano(), 10))
		b.WriteByte(0)
	}
	return b.String(), nil
}

var parserOptions = ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}

// readSource reads dir, or the bundle when bundlePath is set.
func readSource(dir, bundlePath string) (*source, error) {
	if bundlePath != "" {
		return readBundle(bundlePath)
	}
	return readDir(dir)
}

func readDir(dir string) (*source, error) {
	files, err := listDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	src := &source{modules: map[string]*ast.Module{}, tests: map[string]*ast.Module{}, data: map[string]any{}, where: dir}
	h := sha256.New()
	for _, rel := range files {
		path := filepath.Join(dir, filepath.FromSlash(rel))
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read policies: %w", err)
		}
		h.Write([]byte(rel))
		h.Write([]byte{0})
		h.Write(raw)
		h.Write([]byte{0})
		src.files++
		if strings.HasSuffix(rel, ".rego") {
			mod, err := ast.ParseModuleWithOpts(path, string(raw), parserOptions)
			if err != nil {
				return nil, err
			}
			if isTestModule(rel) {
				src.tests[path] = mod
			} else {
				src.modules[path] = mod
			}
			continue
		}
		var doc any
		if err := util.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var at []string
		if d := filepath.ToSlash(filepath.Dir(rel)); d != "." {
			at = strings.Split(d, "/")
		}
		if err := mergeAt(src.data, at, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if len(src.modules) == 0 {
		return nil, fmt.Errorf("no policy modules (*.rego) under %s", dir)
	}
	src.id = hex.EncodeToString(h.Sum(nil))[:12]
	return src, nil
}

// mergeAt merges doc into data at path; objects merge key by key, any
// other overlap is an error.
func mergeAt(data map[string]any, path []string, doc any) error {
	for i, k := range path {
		next, ok := data[k]
		if !ok {
			m := map[string]any{}
			data[k] = m
			data = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("data at %s is not an object", strings.Join(path[:i+1], "."))
		}
		data = m
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return fmt.Errorf("a data file must hold an object, got %s", typeName(doc))
	}
	return mergeObjects(data, obj, path)
}

func mergeObjects(dst, src map[string]any, at []string) error {
	for k, v := range src {
		old, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		a, aok := old.(map[string]any)
		b, bok := v.(map[string]any)
		if !aok || !bok {
			return fmt.Errorf("data key %s is defined twice", strings.Join(append(at, k), "."))
		}
		if err := mergeObjects(a, b, append(at, k)); err != nil {
			return err
		}
	}
	return nil
}

func readBundle(path string) (*source, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	b, err := bundle.NewReader(bytes.NewReader(raw)).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		WithSkipBundleVerification(true).
		Read()
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", path, err)
	}
	sum := sha256.Sum256(raw)
	src := &source{modules: map[string]*ast.Module{}, tests: map[string]*ast.Module{}, data: b.Data, where: path,
		id: hex.EncodeToString(sum[:])[:12]}
	if src.data == nil {
		src.data = map[string]any{}
	}
	for _, mf := range b.Modules {
		name := path + ":" + strings.TrimPrefix(mf.Path, "/")
		if isTestModule(mf.Path) {
			src.tests[name] = mf.Parsed
		} else {
			src.modules[name] = mf.Parsed
		}
		src.files++
	}
	if len(src.modules) == 0 {
		return nil, fmt.Errorf("bundle %s holds no policy modules", path)
	}
	return src, nil
}
