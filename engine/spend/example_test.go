package spend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis/portcullis/engine/spend"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/store/sqlite"
)

func ExampleWriter() {
	dir, _ := os.MkdirTemp("", "spend-example")
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(filepath.Join(dir, "portcullis.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	ctx := context.Background()
	_ = st.CreateKey(ctx, &store.Key{Hash: "abc123", KeyAlias: "ci"})

	w := spend.NewWriter(st, spend.Options{})
	w.Add(store.SpendRecord{RequestID: "req-1", KeyHash: "abc123", Model: "gpt-4o", Cost: 1_500_000, StartTime: time.Now()})
	w.Add(store.SpendRecord{RequestID: "req-2", KeyHash: "abc123", Model: "gpt-4o", Cost: 2_500_000, StartTime: time.Now()})
	if err := w.Close(ctx); err != nil { // commits both
		panic(err)
	}
	k, _ := st.GetKey(ctx, "abc123")
	fmt.Printf("spend $%.4f, %d records\n", float64(k.Spend)/store.NanoPerUSD, w.Stats().Written)
	// Output: spend $0.0040, 2 records
}
