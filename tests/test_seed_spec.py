# ruff: noqa  (copied verbatim from the seed document; its style is kept as written)
"""The seed document's four test classes, as written in ``shared/seed/000_85de58f57118d049.txt``.

Only the imports are completed (the seed imports from ``aether_memory_system`` and uses
``asyncio``, ``datetime``, ``timedelta``, ``timezone`` and ``MemoryQuery`` without importing
them); the class bodies below are copied verbatim. Decisions where the seed's code and these
tests disagree are recorded in ``aether/seed.py`` and ``aether/state/consciousness.py``.
"""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from unittest.mock import Mock, patch
from aether import (
    BitemporalMemoryStore, MemoryAtom, ConsciousnessState, StatePersistenceManager, MemoryQuery
)

class TestBitemporalMemoryStore:
    """Unit tests for Bitemporal Memory Store"""
    
    def setup_method(self):
        """Setup test fixtures"""
        self.memory_store = BitemporalMemoryStore()
        self.test_memory_atom = MemoryAtom()
        self.test_memory_atom.set_content("Test memory content", {"test": "metadata"})
        self.test_memory_atom.tags = {"type": "test", "category": "unit_test"}
    
    def test_store_memory(self):
        """Test memory storage"""
        result = asyncio.run(self.memory_store.store_memory(self.test_memory_atom))
        
        assert result.success
        assert result.atom_id == self.test_memory_atom.atom_id
        assert self.test_memory_atom.atom_id in self.memory_store.memory_atoms
    
    def test_retrieve_memory(self):
        """Test memory retrieval"""
        # Store memory first
        asyncio.run(self.memory_store.store_memory(self.test_memory_atom))
        
        # Retrieve memory
        retrieved_atom = asyncio.run(self.memory_store.retrieve_memory(self.test_memory_atom.atom_id))
        
        assert retrieved_atom is not None
        assert retrieved_atom.atom_id == self.test_memory_atom.atom_id
        assert retrieved_atom.content.inline == self.test_memory_atom.content.inline
    
    def test_query_memories(self):
        """Test memory querying"""
        # Store memory first
        asyncio.run(self.memory_store.store_memory(self.test_memory_atom))
        
        # Query memories
        query = MemoryQuery(tags={"type": "test"}, limit=10)
        results = asyncio.run(self.memory_store.query_memories(query))
        
        assert len(results) == 1
        assert results[0].atom_id == self.test_memory_atom.atom_id
    
    def test_bitemporal_tracking(self):
        """Test bitemporal tracking"""
        # Store memory with specific valid time
        valid_time = datetime.now(timezone.utc) - timedelta(hours=1)
        self.test_memory_atom.set_valid_time(valid_time)
        
        asyncio.run(self.memory_store.store_memory(self.test_memory_atom))
        
        # Query at different times
        past_time = datetime.now(timezone.utc) - timedelta(hours=2)
        future_time = datetime.now(timezone.utc)
        
        # Should not find memory at past time
        past_result = asyncio.run(self.memory_store.retrieve_memory(
            self.test_memory_atom.atom_id, past_time
        ))
        assert past_result is None
        
        # Should find memory at future time
        future_result = asyncio.run(self.memory_store.retrieve_memory(
            self.test_memory_atom.atom_id, future_time
        ))
        assert future_result is not None

class TestConsciousnessState:
    """Unit tests for Consciousness State"""
    
    def setup_method(self):
        """Setup test fixtures"""
        self.consciousness_state = ConsciousnessState()
        self.consciousness_state.agent_id = "test_agent"
        self.consciousness_state.personality_traits = {"curiosity": 0.8}
        self.consciousness_state.learning_patterns = {"pattern1": "value1"}
    
    def test_serialize_deserialize(self):
        """Test state serialization and deserialization"""
        # Serialize state
        serialized = self.consciousness_state.serialize()
        
        # Deserialize state
        deserialized_state = ConsciousnessState.deserialize(serialized)
        
        assert deserialized_state.agent_id == self.consciousness_state.agent_id
        assert deserialized_state.personality_traits == self.consciousness_state.personality_traits
        assert deserialized_state.learning_patterns == self.consciousness_state.learning_patterns
    
    def test_validate_state(self):
        """Test state validation"""
        validation_result = self.consciousness_state.validate()
        assert validation_result.is_valid
    
    def test_calculate_continuity_hash(self):
        """Test continuity hash calculation"""
        hash1 = self.consciousness_state.calculate_continuity_hash()
        hash2 = self.consciousness_state.calculate_continuity_hash()
        
        assert hash1 == hash2
        assert len(hash1) == 32  # MD5 hash length

class TestStatePersistenceManager:
    """Unit tests for State Persistence Manager"""
    
    def setup_method(self):
        """Setup test fixtures"""
        self.persistence_manager = StatePersistenceManager()
        self.test_consciousness_state = ConsciousnessState()
        self.test_consciousness_state.agent_id = "test_agent"
        self.test_consciousness_state.personality_traits = {"curiosity": 0.8}
        self.test_consciousness_state.learning_patterns = {"pattern1": "value1"}
    
    def test_persist_consciousness_state(self):
        """Test consciousness state persistence"""
        result = asyncio.run(self.persistence_manager.persist_consciousness_state(
            self.test_consciousness_state
        ))
        
        assert result.success
        assert result.state_id == self.test_consciousness_state.state_id
    
    def test_restore_consciousness_state(self):
        """Test consciousness state restoration"""
        # Persist state first
        asyncio.run(self.persistence_manager.persist_consciousness_state(
            self.test_consciousness_state
        ))
        
        # Restore state
        restored_state = asyncio.run(self.persistence_manager.restore_consciousness_state(
            self.test_consciousness_state.agent_id
        ))
        
        assert restored_state is not None
        assert restored_state.agent_id == self.test_consciousness_state.agent_id
        assert restored_state.personality_traits == self.test_consciousness_state.personality_traits

class TestAetherMemoryIntegration:
    """Integration tests for Aether Memory System"""
    
    def setup_method(self):
        """Setup integration test fixtures"""
        self.memory_store = BitemporalMemoryStore()
        self.persistence_manager = StatePersistenceManager()
        self.test_memories = [
            MemoryAtom(),
            MemoryAtom(),
            MemoryAtom()
        ]
        self.test_consciousness_state = ConsciousnessState()
        self.test_consciousness_state.agent_id = "test_agent"
    
    def test_end_to_end_memory_workflow(self):
        """Test complete memory workflow"""
        
        # Store memories
        for memory in self.test_memories:
            memory.set_content(f"Test content {memory.atom_id}", {"test": "data"})
            result = asyncio.run(self.memory_store.store_memory(memory))
            assert result.success
        
        # Query memories
        query = MemoryQuery(tags={"test": "data"}, limit=10)
        results = asyncio.run(self.memory_store.query_memories(query))
        assert len(results) == 3
        
        # Test consciousness state persistence
        state_result = asyncio.run(self.persistence_manager.persist_consciousness_state(
            self.test_consciousness_state
        ))
        assert state_result.success
        
        # Test consciousness state restoration
        restored_state = asyncio.run(self.persistence_manager.restore_consciousness_state(
            self.test_consciousness_state.agent_id
        ))
        assert restored_state is not None
        assert restored_state.agent_id == self.test_consciousness_state.agent_id
    
    def test_memory_system_performance(self):
        """Test memory system performance"""
        
        # Store multiple memories
        start_time = datetime.now()
        for i in range(100):
            memory = MemoryAtom()
            memory.set_content(f"Performance test content {i}", {"test": "performance"})
            result = asyncio.run(self.memory_store.store_memory(memory))
            assert result.success
        
        storage_time = (datetime.now() - start_time).total_seconds()
        assert storage_time < 10.0  # Should store 100 memories in less than 10 seconds
        
        # Query memories
        start_time = datetime.now()
        query = MemoryQuery(tags={"test": "performance"}, limit=100)
        results = asyncio.run(self.memory_store.query_memories(query))
        query_time = (datetime.now() - start_time).total_seconds()
        
        assert len(results) == 100
        assert query_time < 1.0  # Should query 100 memories in less than 1 second
