// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A TEST token for development chains only: anyone may mint any amount.
/// @notice It stands in for a payment token such as USDC in tests (18 decimals, so amounts read like
/// wei), on
/// the embedded chain (`chain.token = "test"`) and on anvil. Never deploy it where money is real.
contract IdlegridTestToken is ERC20 {
    constructor() ERC20("idlegrid test token (worthless)", "IGTEST") {}

    /// @notice Open faucet: gives `to` `amount` new tokens. Test chains only.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
