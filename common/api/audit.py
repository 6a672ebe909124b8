"""Public audit endpoints: the signing public keys and the latest signed checkpoint.

Public on purpose: anyone holding these can verify exported checkpoints and
keep their own copies of checkpoints, so that the platform cannot quietly
truncate its log past a checkpoint someone else has seen (docs/audit.md).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.audit_checkpoints import CHECKPOINT_PURPOSE, ExportedCheckpoint, checkpoint_latest
from common.signing import signing_key_provider


class AuditPublicKeysApi(APIView):
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        class KeySerializer(serializers.Serializer):
            key_id = serializers.CharField(help_text="First 16 hex digits of SHA-256 of the raw public key")
            public_key_pem = serializers.CharField(help_text="Ed25519 public key, SubjectPublicKeyInfo PEM")

        keys = KeySerializer(many=True)

    @extend_schema(responses=OutputSerializer, summary="Public keys that sign audit checkpoints")
    def get(self, request: Request) -> Response:
        keys = signing_key_provider().public_keys()
        data = {"keys": [{"key_id": key_id, "public_key_pem": pem} for key_id, pem in sorted(keys.items())]}
        return Response(self.OutputSerializer(data).data)


class AuditCheckpointLatestApi(APIView):
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        class CheckpointSerializer(serializers.Serializer):
            seq = serializers.IntegerField()
            hash = serializers.CharField(help_text="SHA-256 (hex) of the event at seq")
            key_id = serializers.CharField()
            signed_at = serializers.CharField(help_text="UTC, microseconds, as signed")
            signature = serializers.CharField(help_text="Ed25519 signature, base64")

        purpose = serializers.CharField(help_text="The purpose field of the signed bytes")
        checkpoint = CheckpointSerializer(allow_null=True)

    @extend_schema(
        responses=OutputSerializer,
        summary="The latest signed audit checkpoint (null before the first one)",
    )
    def get(self, request: Request) -> Response:
        latest = checkpoint_latest()
        checkpoint = ExportedCheckpoint.from_model(latest) if latest is not None else None
        data = {"purpose": CHECKPOINT_PURPOSE, "checkpoint": checkpoint}
        return Response(self.OutputSerializer(data).data)
