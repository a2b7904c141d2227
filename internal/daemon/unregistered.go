package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/apnsd/apnsd/internal/ipc"
)

// unregisteredLog appends records (ipc.UnregisteredRecord) to the
// unregistered file, one JSON line each. A nil *unregisteredLog (no
// unregistered_file) drops them. Safe for concurrent use.
type unregisteredLog struct {
	mu sync.Mutex
	f  *os.File
}

func openUnregistered(path string) (*unregisteredLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("unregistered_file: %w", err)
	}
	return &unregisteredLog{f: f}, nil
}

func (u *unregisteredLog) add(r ipc.UnregisteredRecord) error {
	if u == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	_, err = u.f.Write(append(b, '\n'))
	return err
}

func (u *unregisteredLog) close() {
	if u != nil {
		u.f.Close()
	}
}
