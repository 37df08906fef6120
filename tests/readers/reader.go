// Call an API with tokend's token, read afresh for each request.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func accessToken(path string) (string, error) {
	for i := 0; i < 300; i++ { // up to 30 s for tokend's first write
		b, err := os.ReadFile(path)
		if err == nil {
			return strings.TrimSpace(string(b)), nil
		}
		if !os.IsNotExist(err) {
			return "", err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("no token at %s", path)
}

func main() {
	path := os.Getenv("TOKEN_FILE")
	if path == "" {
		path = "/run/tokend/blnk/access_token"
	}
	token, err := accessToken(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	req, _ := http.NewRequest("GET", os.Getenv("API_URL"), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}
