package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// benchMaster is the master key of the gateways of (b) and (f).
const benchMaster = "sk-bench-master"

// pipelineKeyBody is the virtual key (b) sends with: limits far above what
// the run can reach, so that every check runs and none refuses.
const pipelineKeyBody = `{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 1000000000}`

// startPipelineGateway starts (b)'s gateway (master key set, so every
// request goes through the key stage) and creates its virtual key through
// the admin API.
func (b *bench) startPipelineGateway(bin string, upPort int) (*target, error) {
	t, err := b.startGateway(bin, "portcullis-full", gwOpts{upPort: upPort, master: benchMaster})
	if err != nil {
		return nil, err
	}
	t.key, t.name = "pcfull", "portcullis full pipeline"
	key, err := generateKey(t.addr, benchMaster, pipelineKeyBody)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (see %s)", t.name, err, t.proc.log)
	}
	t.header = []string{"Authorization: Bearer " + key}
	return t, nil
}

// generateKey calls POST /key/generate and returns the new key.
func generateKey(addr, master, body string) (string, error) {
	req, err := http.NewRequest("POST", "http://"+addr+"/key/generate", bytes.NewBufferString(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+master)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("POST /key/generate: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("POST /key/generate: %w", err)
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("POST /key/generate: HTTP %d: %.300s", resp.StatusCode, data)
	}
	var out struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.Key == "" {
		return "", fmt.Errorf("POST /key/generate: no key in %.300s", data)
	}
	return out.Key, nil
}
