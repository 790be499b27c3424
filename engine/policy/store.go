package policy

import (
	"context"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// readStore is a revision's store. A revision's data never changes once
// loaded, so the data document is kept as one AST value, built when the
// revision loads, and reads walk it directly: they need neither a
// transaction nor a lock, and allocate nothing (every object key of the
// data is interned when the revision loads, so a key the data does not hold
// anywhere is not found at once: inmem allocates a key term per path
// segment, and policies look up absent documents — sections not configured
// — on every request). Equal parts of the data are stored once (ten
// thousand teams with the same providers share one list), which keeps the
// heap the garbage collector walks small. The wrapped inmem store holds no
// data; it serves what rego needs besides (transactions, policies,
// triggers). Writes are refused.
type readStore struct {
	storage.Store
	root ast.Value
	keys map[string]*ast.Term
}

// newReadStore builds the store of a revision's data.
func newReadStore(data map[string]any) (*readStore, error) {
	v, err := ast.InterfaceToValue(data)
	if err != nil {
		return nil, err
	}
	d := &dedup{scalars: map[ast.Value]*ast.Term{}, composites: map[int][]*ast.Term{}}
	root := d.term(ast.NewTerm(v)).Value
	s := &readStore{
		Store: inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true)),
		root:  root,
		keys:  map[string]*ast.Term{},
	}
	s.intern(root)
	return s, nil
}

// dedup makes equal values of a document one term.
type dedup struct {
	scalars    map[ast.Value]*ast.Term
	composites map[int][]*ast.Term
}

func (d *dedup) term(t *ast.Term) *ast.Term {
	switch v := t.Value.(type) {
	case ast.String, ast.Number, ast.Boolean, ast.Null:
		if c, ok := d.scalars[v]; ok {
			return c
		}
		// A term of its own: the converted document allocates its terms in
		// slabs, and keeping one would keep the slab and what it points to.
		c := ast.NewTerm(v)
		d.scalars[v] = c
		return c
	case *ast.Array:
		elems := make([]*ast.Term, v.Len())
		for i := range elems {
			elems[i] = d.term(v.Elem(i))
		}
		return d.canonical(ast.ArrayTerm(elems...))
	case ast.Set:
		elems := make([]*ast.Term, 0, v.Len())
		v.Foreach(func(e *ast.Term) { elems = append(elems, d.term(e)) })
		return d.canonical(ast.SetTerm(elems...))
	case ast.Object:
		items := make([][2]*ast.Term, 0, v.Len())
		v.Foreach(func(k, val *ast.Term) { items = append(items, [2]*ast.Term{d.term(k), d.term(val)}) })
		return d.canonical(ast.ObjectTerm(items...))
	}
	return t
}

func (d *dedup) canonical(t *ast.Term) *ast.Term {
	h := t.Value.Hash()
	for _, c := range d.composites[h] {
		if c.Value.Compare(t.Value) == 0 {
			return c
		}
	}
	d.composites[h] = append(d.composites[h], t)
	return t
}

func (s *readStore) intern(v ast.Value) {
	switch x := v.(type) {
	case ast.Object:
		x.Foreach(func(k, val *ast.Term) {
			if ks, ok := k.Value.(ast.String); ok {
				if _, seen := s.keys[string(ks)]; !seen {
					s.keys[string(ks)] = k
				}
			}
			s.intern(val.Value)
		})
	case *ast.Array:
		x.Foreach(func(t *ast.Term) { s.intern(t.Value) })
	}
}

// errReadOnly is what a write to a revision's data gets.
var errReadOnly = &storage.Error{Code: storage.InvalidTransactionErr, Message: "the policy revision's data is read-only"}

// Write refuses: a revision's data never changes (reload instead).
func (s *readStore) Write(context.Context, storage.Transaction, storage.PatchOp, storage.Path, any) error {
	return errReadOnly
}

// errNotFound is what Read returns for a path the data does not hold.
var errNotFound = &storage.Error{Code: storage.NotFoundErr, Message: "document not found"}

// Read returns the document at path (the transaction is not needed).
func (s *readStore) Read(_ context.Context, _ storage.Transaction, path storage.Path) (any, error) {
	node := s.root
	for _, seg := range path {
		switch x := node.(type) {
		case ast.Object:
			k, ok := s.keys[seg]
			if !ok {
				return nil, errNotFound
			}
			t := x.Get(k)
			if t == nil {
				return nil, errNotFound
			}
			node = t.Value
		case *ast.Array:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= x.Len() {
				return nil, errNotFound
			}
			node = x.Elem(i).Value
		default:
			return nil, errNotFound
		}
	}
	return node, nil
}

// readTxn is the transaction evaluations pass: readStore.Read needs none,
// so evaluations neither open nor abort one (or take the store's lock).
type readTxn struct{}

func (readTxn) ID() uint64 { return 0 }
