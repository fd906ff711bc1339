"""The built-in credential types."""
from __future__ import annotations

import base64
import json

from .. import kubeconfig as kube
from ..errors import ValidationError
from . import (CredentialType, Field, FileForm, Problem, as_bytes, check_filename,
               env_prefix, register)

_target = Field("target", "Target URL", required=False,
                help="What this credential opens (git or HTTP URL); used by connectivity tests")


@register
class UsernamePassword(CredentialType):
    name, label = "username_password", "Username with password"
    fields = (Field("username", "Username"), Field("password", "Password", secret=True), _target)
    target_field = "target"

    def single_value(self, values):
        return f"{values['username']}:{values['password']}"

    def default_binding(self, cred_id):
        p = env_prefix(cred_id)
        return {"env": {"username": f"{p}_USR", "password": f"{p}_PSW"}}

    def mask_values(self, values):
        return super().mask_values(values) + [as_bytes(self.single_value(values))]


@register
class SecretText(CredentialType):
    name, label = "secret_text", "Secret text"
    fields = (Field("secret", "Secret", secret=True), _target)
    target_field = "target"

    def single_value(self, values):
        return values["secret"]

    def default_binding(self, cred_id):
        return {"env": env_prefix(cred_id)}

    def file_form(self, values):
        return FileForm(as_bytes(values["secret"]), "secret")


@register
class Kubeconfig(CredentialType):
    name, label = "kubeconfig", "Kubeconfig"
    fields = (Field("kubeconfig", "Kubeconfig", secret=True, kind="multiline"),)

    def check(self, values):
        doc = kube.parse(values["kubeconfig"])
        return [Problem(p.reason, p.message) for p in kube.flags(doc)]

    def single_value(self, values):
        return values["kubeconfig"]

    def bindable_fields(self, values=None):
        return ()

    def file_form(self, values):
        return FileForm(as_bytes(values["kubeconfig"]), "kubeconfig")

    def default_binding(self, cred_id):
        return {"file": "KUBECONFIG"}

    def mask_values(self, values):
        secrets = kube.secrets(values["kubeconfig"])
        return super().mask_values(values) + [as_bytes(s) for s in secrets]


@register
class DockerRegistry(CredentialType):
    name, label = "docker_registry", "Docker registry"
    fields = (Field("registry", "Registry", help="host[:port], e.g. registry.example:5000"),
              Field("username", "Username"), Field("password", "Password", secret=True))
    target_field = "registry"

    def single_value(self, values):
        return f"{values['username']}:{values['password']}"

    def file_form(self, values):
        auth = base64.b64encode(as_bytes(self.single_value(values))).decode()
        doc = {"auths": {values["registry"]: {"auth": auth}}}
        return FileForm(json.dumps(doc, indent=2).encode() + b"\n", "config.json", expose_dir=True)

    def default_binding(self, cred_id):
        return {"file": "DOCKER_CONFIG"}

    def mask_values(self, values):
        return super().mask_values(values) + [as_bytes(self.single_value(values))]


@register
class SshPrivateKey(CredentialType):
    name, label = "ssh_private_key", "SSH private key"
    fields = (Field("username", "Username"),
              Field("private_key", "Private key", secret=True, kind="multiline"),
              Field("passphrase", "Passphrase", secret=True, required=False),
              Field("target", "Target host", required=False,
                    help="host or host:port used by connectivity tests"))
    target_field = "target"

    def check(self, values):
        key = values["private_key"]
        if "-----BEGIN" not in key or "PRIVATE KEY-----" not in key:
            raise ValidationError("Private key must be a PEM or OpenSSH private key "
                                  "(-----BEGIN … PRIVATE KEY-----)", field="private_key")
        return []

    def file_form(self, values):
        key = values["private_key"]
        return FileForm(as_bytes(key if key.endswith("\n") else key + "\n"), "id_key")

    def default_binding(self, cred_id):
        p = env_prefix(cred_id)
        return {"file": f"{p}_KEY", "env": {"username": f"{p}_USR"}}

    def mask_values(self, values):
        return super().mask_values(values) + [
            as_bytes(line.strip()) for line in values["private_key"].splitlines()
            if len(line.strip()) >= 16 and not line.startswith("-----")]


@register
class AccessKey(CredentialType):
    name, label = "access_key", "Access key"
    fields = (Field("access_key_id", "Access key ID"),
              Field("secret_access_key", "Secret access key", secret=True))

    def default_binding(self, cred_id):
        return {"env": {"access_key_id": "AWS_ACCESS_KEY_ID",
                        "secret_access_key": "AWS_SECRET_ACCESS_KEY"}}


@register
class Generic(CredentialType):
    name, label = "generic", "Key/value pairs"
    fields = (Field("values", "Values", secret=True, kind="map"),)

    def bindable_fields(self, values=None):
        return tuple(values["values"]) if values else ()

    def field_value(self, values, name):
        if name not in values["values"]:
            raise ValidationError(f"this generic credential has no key {name!r}", field=name)
        return values["values"][name]

    def default_binding(self, cred_id):
        return {"env": "*"}  # every key under its own name; expanded by the planner

    def file_form(self, values):
        body = "".join(f"{k}={json.dumps(v)}\n" for k, v in values["values"].items())
        return FileForm(body.encode(), "values.env")


@register
class SecretFile(CredentialType):
    name, label = "secret_file", "Secret file"
    fields = (Field("filename", "File name"),
              Field("content", "Content", secret=True, kind="bytes"))

    def check(self, values):
        check_filename(values["filename"])
        return []

    def bindable_fields(self, values=None):
        return ("filename",)

    def file_form(self, values):
        return FileForm(values["content"], values["filename"])

    def default_binding(self, cred_id):
        return {"file": env_prefix(cred_id)}

    def mask_values(self, values):
        content = values["content"]
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return [content] if len(content) <= 4096 else []
        return [content] + [as_bytes(line.strip()) for line in text.splitlines()
                            if len(line.strip()) >= 8]
