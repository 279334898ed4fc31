"""DynamoDB's attribute-value form, and expressions whose every name and value is a placeholder."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from embedding_assets.domain.models import Status

serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def dump(item: dict[str, Any]) -> dict[str, Any]:
    return {name: serializer.serialize(value) for name, value in item.items()}


def load(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


class Expression:
    """Placeholders for every name and value, so reserved words (TYPE, status, owner, text) need no care."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self.names[placeholder] = attribute
        return placeholder

    def v(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = serializer.serialize(value)
        return placeholder

    def status_is(self, status: Status) -> str:
        """Missing embedding_status means NONE."""
        test = f"{self.n('embedding_status')} = {self.v(status.value)}"
        if status is Status.NONE:
            return f"(attribute_not_exists({self.n('embedding_status')}) OR {test})"
        return test

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out

