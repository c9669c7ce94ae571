// SPDX-License-Identifier: MIT
// Contracts for the tracing e2e (traces.mjs): a call that reverts inside a nested call, caught
// and bubbled, with logs and storage writes on both sides. Compiled by solc-js at test time.
pragma solidity ^0.8.24;

contract Inner {
    uint256 public stored;

    event Poked(uint256 value);

    function poke(uint256 value) external returns (uint256) {
        stored = value;
        emit Poked(value);
        if (value > 100) {
            revert("too big");
        }
        return value * 2;
    }
}

contract Outer {
    Inner public immutable inner;
    uint256 public calls;

    event Tried(bool ok);

    constructor(Inner inner_) {
        inner = inner_;
    }

    // The nested revert is caught: the transaction succeeds, the inner frame is reverted.
    function tryPoke(uint256 value) external {
        calls += 1;
        try inner.poke(value) returns (uint256) {
            emit Tried(true);
        } catch {
            emit Tried(false);
        }
    }

    // The nested revert bubbles up: the transaction reverts with the inner reason.
    function mustPoke(uint256 value) external {
        calls += 1;
        inner.poke(value);
    }
}

// A contract that a contract creates with an endowment, and that sends it on: internal
// operations and a contract's creator (ots_getInternalOperations, ots_getContractCreator).
contract Child {
    constructor() payable {}

    function give(address payable to) external {
        to.transfer(address(this).balance);
    }
}

contract Factory {
    event Made(address child);

    function make() external payable returns (address) {
        Child child = new Child{value: msg.value}();
        emit Made(address(child));
        return address(child);
    }
}
