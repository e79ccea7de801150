"""The cold-store port: immutable files named by the log offset range they hold.

A file for a given range is written once; writing it again replaces it
(same name), so a flush replayed after a crash adds no duplicate rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import msgspec


class FileRef(msgspec.Struct, frozen=True):
    table: str
    partition: str
    name: str


class ColdStore(ABC):
    @abstractmethod
    def put(self, ref: FileRef, data: bytes) -> None:
        """Durably store ``data`` at ``ref``, replacing any file of the same name atomically."""

    @abstractmethod
    def list(self, table: str) -> list[FileRef]: ...

    @abstractmethod
    def uri(self, ref: FileRef) -> str: ...
