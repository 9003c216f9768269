package registry

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/fnrun/fnrun/drivers"
	"github.com/fnrun/fnrun/internal/dockerconfig"
	"github.com/fnrun/fnrun/internal/dockerconfig/dockerconfigtest"
)

// TestDockerConfigCredentialsHost: the config.json's credentials are
// offered to the host containerd talks to for the image, and only there;
// Docker Hub's key names index.docker.io while pulls go to
// registry-1.docker.io.
func TestDockerConfigCredentialsHost(t *testing.T) {
	config := dockerconfigtest.WriteConfig(t, `{"auths":{
		"https://index.docker.io/v1/":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("hub:pw"))+`"},
		"http://127.0.0.1:5001/v2/":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("local:pw"))+`"}}}`)
	auth, err := dockerconfig.Load(config, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	for image, want := range map[string]string{
		"busybox":                      dockerHubHost + " hub",
		"docker.io/library/busybox":    dockerHubHost + " hub",
		"127.0.0.1:5001/fnrun/busybox": "127.0.0.1:5001 local",
		"127.0.0.1:5000/fnrun/busybox": " ",
		"quay.io/fn/app":               " ",
	} {
		ref, err := drivers.NormalizeImage(image)
		if err != nil {
			t.Fatal(err)
		}
		conf, err := auth.PullCredentials(context.Background(), &drivers.Task{}, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		user := ""
		if conf != nil {
			user = conf.Username
		}
		if got := credentialsHost(ref, conf) + " " + user; got != want {
			t.Errorf("%s: credentials of %q offered to %q, want %q", image, user, credentialsHost(ref, conf), want)
		}
	}
}

func TestRegistryHost(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"docker.io":                   dockerHubHost,
		"https://index.docker.io/v1/": dockerHubHost,
		"127.0.0.1:5001":              "127.0.0.1:5001",
		"http://127.0.0.1:5001/v2/":   "127.0.0.1:5001",
		"Quay.IO":                     "quay.io",
	} {
		if got := registryHost(in); got != want {
			t.Errorf("registryHost(%q) = %q, want %q", in, got, want)
		}
	}
}
