// deploycheck: what `docker compose config` and a strict Kubernetes API decode would say about
// kstage's deploy files, without a Docker engine or a cluster.
//
//	deploycheck compose FILE   load FILE with compose-go (schema, interpolation, merge keys)
//	deploycheck k8s FILE...    decode every object strictly into its Kubernetes API type
//	                           (unknown or misspelled fields are errors)
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func compose(path string) error {
	opts, err := cli.NewProjectOptions([]string{path},
		cli.WithWorkingDirectory(filepath.Dir(path)), cli.WithOsEnv,
		cli.WithProfiles([]string{"*"}))
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	fmt.Printf("ok    compose-go loads %s: %d services\n", path, len(project.Services)+len(project.DisabledServices))
	return nil
}

func k8s(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		if meta.Kind == "" {
			continue
		}
		var target any
		switch meta.Kind {
		case "ConfigMap":
			target = &corev1.ConfigMap{}
		case "Secret":
			target = &corev1.Secret{}
		case "Service":
			target = &corev1.Service{}
		case "StatefulSet":
			target = &appsv1.StatefulSet{}
		case "PodDisruptionBudget":
			target = &policyv1.PodDisruptionBudget{}
		default:
			return fmt.Errorf("%s: no type known for kind %s", path, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			return fmt.Errorf("%s: %s: %w", path, meta.Kind, err)
		}
		fmt.Printf("ok    %s: %s decodes strictly\n", path, meta.Kind)
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: deploycheck compose FILE | k8s FILE...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "compose":
		err = compose(os.Args[2])
	case "k8s":
		for _, path := range os.Args[2:] {
			if err = k8s(path); err != nil {
				break
			}
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL ", err)
		os.Exit(1)
	}
}
