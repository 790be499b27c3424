package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"go.uber.org/zap"
)

// host owns the wazero runtimes of one Stage: one per memory-limit class
// and deadline mode (WithMemoryLimitPages and WithCloseOnContextDone are
// runtime settings), sharing one file-backed compilation cache. A module
// is compiled once per runtime, keyed by the sha256 of its bytes.
type host struct {
	log   *zap.Logger
	cache wazero.CompilationCache // nil: no file cache

	mu       sync.Mutex
	runtimes map[runtimeKey]wazero.Runtime
	compiled map[compiledKey]wazero.CompiledModule
}

type runtimeKey struct {
	pages       uint32
	closeOnDone bool
}

type compiledKey struct {
	sum [32]byte
	rt  runtimeKey
}

// defaultCacheDir is where compiled modules are kept between runs.
func defaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "portcullis", "wasm"), nil
}

func newHost(log *zap.Logger, cacheDir string) *host {
	h := &host{log: log, runtimes: map[runtimeKey]wazero.Runtime{}, compiled: map[compiledKey]wazero.CompiledModule{}}
	if cacheDir == "off" {
		return h
	}
	if cacheDir == "" {
		d, err := defaultCacheDir()
		if err != nil {
			log.Warn("wasm compilation cache disabled: no user cache directory", zap.Error(err))
			return h
		}
		cacheDir = d
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		log.Warn("wasm compilation cache disabled", zap.String("dir", cacheDir), zap.Error(err))
		return h
	}
	c, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		log.Warn("wasm compilation cache disabled", zap.String("dir", cacheDir), zap.Error(err))
		return h
	}
	h.cache = c
	return h
}

// runtime returns the runtime of a class, creating it with WASI and the
// gw host module.
func (h *host) runtime(ctx context.Context, k runtimeKey) (wazero.Runtime, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r, ok := h.runtimes[k]; ok {
		return r, nil
	}
	cfg := wazero.NewRuntimeConfig().WithMemoryLimitPages(k.pages).WithCloseOnContextDone(k.closeOnDone)
	if h.cache != nil {
		cfg = cfg.WithCompilationCache(h.cache)
	}
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, err
	}
	if err := instantiateGW(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, err
	}
	h.runtimes[k] = r
	return r, nil
}

// compile compiles code for runtime class k, once.
func (h *host) compile(ctx context.Context, r wazero.Runtime, k runtimeKey, code []byte) (wazero.CompiledModule, error) {
	key := compiledKey{sum: sha256.Sum256(code), rt: k}
	h.mu.Lock()
	c, ok := h.compiled[key]
	h.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := r.CompileModule(ctx, code)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.compiled[key] = c
	h.mu.Unlock()
	return c, nil
}

func (h *host) close(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, r := range h.runtimes {
		_ = r.Close(ctx)
		delete(h.runtimes, k)
	}
	clear(h.compiled)
	if h.cache != nil {
		_ = h.cache.Close(ctx)
		h.cache = nil
	}
}

// The gw host module (sdk/ABI.md §2). Host functions find the calling
// instance through the call's context.

type instanceKey struct{}

func instantiateGW(ctx context.Context, r wazero.Runtime) error {
	i32 := api.ValueTypeI32
	_, err := r.NewHostModuleBuilder("gw").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLog), []api.ValueType{i32, i32, i32}, nil).
		WithParameterNames("level", "ptr", "len").Export("log").
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostGetConfig), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("buf", "limit").Export("get_config").
		Instantiate(ctx)
	return err
}

func hostLog(ctx context.Context, m api.Module, stack []uint64) {
	in, _ := ctx.Value(instanceKey{}).(*instance)
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	if n > maxLogLen {
		n = maxLogLen
	}
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		panic("gw.log: buffer outside memory")
	}
	if in != nil {
		in.p.guestLog(level, string(b))
	}
}

func hostGetConfig(ctx context.Context, m api.Module, stack []uint64) {
	in, _ := ctx.Value(instanceKey{}).(*instance)
	cfg := []byte("null")
	if in != nil {
		cfg = in.p.config
	}
	buf, limit := uint32(stack[0]), uint32(stack[1])
	if uint32(len(cfg)) <= limit && !m.Memory().Write(buf, cfg) {
		panic("gw.get_config: buffer outside memory")
	}
	stack[0] = uint64(uint32(len(cfg)))
}

// Module shape (sdk/ABI.md §1).

// Supported lists the ABI version markers this host knows, newest first.
var Supported = []string{"gw_abi_v1"}

// moduleShape is what load-time validation found in a module.
type moduleShape struct {
	markers  []string
	exports  hookSet
	start    []string // the start functions to run: _initialize or none
	reactor  bool
	command  bool
	imports  []string
	problems []string
}

func sig(d api.FunctionDefinition) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, t := range d.ParamTypes() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(api.ValueTypeName(t))
	}
	b.WriteString(")->(")
	for i, t := range d.ResultTypes() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(api.ValueTypeName(t))
	}
	b.WriteByte(')')
	return b.String()
}

// inspectShape validates a compiled module against ABI v1.
func inspectShape(c wazero.CompiledModule) moduleShape {
	var s moduleShape
	fns := c.ExportedFunctions()
	for name := range fns {
		if strings.HasPrefix(name, "gw_abi_v") {
			s.markers = append(s.markers, name)
		}
	}
	sort.Strings(s.markers)
	if _, ok := fns["gw_abi_v1"]; !ok {
		found := "none"
		if len(s.markers) > 0 {
			found = strings.Join(s.markers, ", ")
		}
		s.problems = append(s.problems, fmt.Sprintf("the module exports no ABI version this host supports (supported: %s; found: %s)",
			strings.Join(Supported, ", "), found))
	} else if g := sig(fns["gw_abi_v1"]); g != "()->()" {
		s.problems = append(s.problems, "gw_abi_v1 must be () -> (), is "+g)
	}
	if _, ok := c.ExportedMemories()["memory"]; !ok {
		s.problems = append(s.problems, `the module does not export its memory as "memory"`)
	}
	want := map[string]string{"gw_alloc": "(i32)->(i32)", "gw_free": "(i32)->()"}
	for _, n := range []string{"gw_alloc", "gw_free"} {
		d, ok := fns[n]
		switch {
		case !ok:
			s.problems = append(s.problems, "the module does not export "+n)
		case sig(d) != want[n]:
			s.problems = append(s.problems, fmt.Sprintf("%s must be %s, is %s", n, want[n], sig(d)))
		}
	}
	for h := HookConfig; h < numHooks; h++ {
		d, ok := fns[h.Export()]
		if !ok {
			continue
		}
		if g := sig(d); g != "(i32,i32)->(i64)" {
			s.problems = append(s.problems, fmt.Sprintf("%s must be (i32,i32)->(i64), is %s", h.Export(), g))
			continue
		}
		s.exports.add(h)
	}
	_, s.reactor = fns["_initialize"]
	_, s.command = fns["_start"]
	switch {
	case s.reactor:
		s.start = []string{"_initialize"}
	case s.command:
		s.problems = append(s.problems, "a command module (exports _start, not _initialize): build it as a reactor "+
			"(Go: -buildmode=c-shared; clang: -mexec-model=reactor)")
	}
	for _, d := range c.ImportedFunctions() {
		mod, name, _ := d.Import()
		s.imports = append(s.imports, mod+"."+name)
		switch mod {
		case "wasi_snapshot_preview1":
		case "gw":
			want := map[string]string{"log": "(i32,i32,i32)->()", "get_config": "(i32,i32)->(i32)"}[name]
			switch {
			case want == "":
				s.problems = append(s.problems, "imports gw."+name+", which ABI v1 does not define (gw.log, gw.get_config)")
			case sig(d) != want:
				s.problems = append(s.problems, fmt.Sprintf("imports gw.%s as %s, want %s", name, sig(d), want))
			}
		default:
			s.problems = append(s.problems, fmt.Sprintf("imports %s.%s, which the host does not provide (only gw.* and wasi_snapshot_preview1.*)", mod, name))
		}
	}
	for _, d := range c.ImportedMemories() {
		mod, name, _ := d.Import()
		s.problems = append(s.problems, fmt.Sprintf("imports memory %s.%s: the module must define and export its own memory", mod, name))
	}
	return s
}

// ModuleInfo describes a module, for `portcullis plugin inspect`.
type ModuleInfo struct {
	Size   int
	SHA256 string
	// ABI lists the gw_abi_v* markers the module exports; Supported says
	// whether this host runs one of them.
	ABI       []string
	Supported bool
	// Hooks lists the hooks the module exports.
	Hooks   []string
	Config  bool // exports gw_on_config
	Reactor bool // exports _initialize
	Command bool // exports _start
	// Memory in 64 KiB pages: the declared minimum, and the maximum when
	// one is declared.
	MemoryMin uint32
	MemoryMax uint32
	HasMax    bool
	Imports   []string
	// Problems are the reasons the host would refuse the module.
	Problems []string
}

// Inspect compiles a module (without a cache) and reports its shape.
func Inspect(ctx context.Context, code []byte) (*ModuleInfo, error) {
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	c, err := r.CompileModule(ctx, code)
	if err != nil {
		return nil, err
	}
	s := inspectShape(c)
	sum := sha256.Sum256(code)
	info := &ModuleInfo{
		Size: len(code), SHA256: hex.EncodeToString(sum[:]), ABI: s.markers, Hooks: s.exports.names(),
		Config: s.exports.has(HookConfig), Reactor: s.reactor, Command: s.command, Imports: s.imports, Problems: s.problems,
	}
	for _, m := range s.markers {
		for _, v := range Supported {
			if m == v {
				info.Supported = true
			}
		}
	}
	if m, ok := c.ExportedMemories()["memory"]; ok {
		info.MemoryMin = m.Min()
		info.MemoryMax, info.HasMax = m.Max()
	}
	return info, nil
}
